defmodule ElixirScope.Args do
  @moduledoc false
  # Checks of public functions' arguments, shared by every module. A bad argument raises an
  # ArgumentError naming the argument, showing the bad value and saying what is allowed
  # (`invalid pid :me, expected a pid`), never a FunctionClauseError or the NIFs' bare
  # "argument error". Also the clamps that bring integers beyond the NIFs' 64 bits to the bound
  # they mean: a time before or after the capture's clock is no bound, a seq past 2^64 - 1 is
  # after every event.

  @min_i64 -9_223_372_036_854_775_808
  @max_i64 9_223_372_036_854_775_807
  @max_u64 18_446_744_073_709_551_615

  @doc false
  # Raises the ArgumentError of an invalid argument: `name` is an option (an atom, shown as
  # `:limit`) or a positional argument (a string, shown as is).
  @spec bad!(atom() | String.t(), term(), String.t()) :: no_return()
  def bad!(name, value, expected) do
    raise ArgumentError,
          "invalid #{name(name)} #{inspect(value, limit: 20, printable_limit: 200)}, " <>
            "expected #{expected}"
  end

  defp name(key) when is_atom(key), do: inspect(key)
  defp name(name), do: name

  @doc false
  # `opts` when it is a keyword list.
  @spec opts!(term()) :: keyword()
  def opts!(opts) do
    if is_list(opts) and Keyword.keyword?(opts) do
      opts
    else
      raise ArgumentError,
            "expected a keyword list of options, got: " <>
              inspect(opts, limit: 20, printable_limit: 200)
    end
  end

  @doc false
  # What a store argument (an option, or a positional argument) must be.
  @spec bad_store!(term(), atom() | String.t()) :: no_return()
  def bad_store!(other, name) do
    bad!(
      name,
      other,
      "an ElixirScope.Store (from ElixirScope.Store.new!/1 or ElixirScope.open/2)"
    )
  end

  @doc false
  @spec pid!(term(), String.t()) :: pid()
  def pid!(pid, _name) when is_pid(pid), do: pid
  def pid!(other, name), do: bad!(name, other, "a pid")

  @doc false
  # A module name: an atom, but not nil or the wildcard :_.
  @spec module!(term(), String.t()) :: module()
  def module!(mod, _name) when is_atom(mod) and mod not in [nil, :_], do: mod
  def module!(other, name), do: bad!(name, other, "a module (an atom)")

  @doc false
  @spec atom!(term(), atom() | String.t()) :: atom()
  def atom!(a, _name) when is_atom(a), do: a
  def atom!(other, name), do: bad!(name, other, "an atom")

  @doc false
  @spec pos_integer!(term(), atom() | String.t()) :: pos_integer()
  def pos_integer!(n, _name) when is_integer(n) and n > 0, do: n
  def pos_integer!(other, name), do: bad!(name, other, "a positive integer")

  @doc false
  @spec non_neg_integer!(term(), atom() | String.t()) :: non_neg_integer()
  def non_neg_integer!(n, _name) when is_integer(n) and n >= 0, do: n
  def non_neg_integer!(other, name), do: bad!(name, other, "a non-negative integer")

  @doc false
  @spec boolean!(term(), atom() | String.t()) :: boolean()
  def boolean!(b, _name) when is_boolean(b), do: b
  def boolean!(other, name), do: bad!(name, other, "true or false")

  @doc false
  # A file system path: a non-empty UTF-8 string or charlist (the NIFs read paths as UTF-8).
  @spec path!(term(), String.t()) :: String.t()
  def path!(path, name) do
    case to_path(path) do
      {:ok, string} when string != "" ->
        if String.valid?(string) and not String.contains?(string, <<0>>),
          do: string,
          else: bad!(name, path, "a path (a non-empty UTF-8 string without NUL bytes)")

      _ ->
        bad!(name, path, "a path (a non-empty UTF-8 string without NUL bytes)")
    end
  end

  defp to_path(path) when is_binary(path), do: {:ok, path}

  defp to_path(path) when is_list(path) do
    {:ok, List.to_string(path)}
  rescue
    _ in [ArgumentError, UnicodeConversionError] -> :error
  end

  defp to_path(_), do: :error

  @doc false
  # `nil` or a function of `arity`.
  @spec fun!(term(), atom() | String.t(), arity()) :: function() | nil
  def fun!(nil, _name, _arity), do: nil
  def fun!(f, _name, arity) when is_function(f, arity), do: f
  def fun!(other, name, arity), do: bad!(name, other, "a function of arity #{arity}")

  @doc false
  # Monotonic nanoseconds for a NIF (a signed 64-bit integer): beyond either end the time is
  # before or after anything the capture's clock can show, so the end itself means the same.
  @spec i64(integer()) :: integer()
  def i64(t) when is_integer(t), do: t |> max(@min_i64) |> min(@max_i64)

  @doc false
  # A seq for a NIF (an unsigned 64-bit integer): past 2^64 - 1 is after every event.
  @spec u64(non_neg_integer()) :: non_neg_integer()
  def u64(n) when is_integer(n) and n >= 0, do: min(n, @max_u64)

  @doc false
  # A limit for a NIF: at most 2^63 - 1, more events than any store holds.
  @spec limit(non_neg_integer()) :: non_neg_integer()
  def limit(n) when is_integer(n) and n >= 0, do: min(n, @max_i64)
end
