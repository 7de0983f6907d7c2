defmodule ElixirScope.Watch.Pattern do
  @moduledoc """
  What `ElixirScope.watch/2` watches, read from a string in Elixir syntax: a call pattern
  (`"MyApp.Repo.get(_, id) when id > 10"`, `"MyApp.Repo.get/2"`, `"MyApp.Repo.get"`,
  `"MyApp.Repo"`, `":ets.lookup(t, _)"`) or, for `watch/3`, a message pattern (`"{:deposit, n}
  when n > 100"`).

  Strings are parsed as `ElixirScope.Query.DSL`'s pattern strings are: validated, never
  evaluated, and no atom is created (a module or function whose name is not an atom already
  does not exist, and is reported as unknown).

  Patterns that would endanger the node are refused with the reason, as recon and redbug do:
  ElixirScope's own modules and the VM's (`:erlang`, `:erts_internal`, ...), the modules a
  printed line goes through (`IO`, `:io`, `:io_lib`, `Inspect`, `:unicode`, the group leader's
  and the terminal's), and every function of a module of OTP's or Elixir's core applications at
  once (`"Enum"`, `":lists"`: every process calls them; name a function).
  """

  alias ElixirScope.Query.DSL

  @type t :: %__MODULE__{
          kind: :calls | :messages,
          source: String.t(),
          module: module() | nil,
          function: atom() | :_,
          arity: non_neg_integer() | :_,
          pattern: nil | compiled() | [compiled()]
        }

  @typedoc "A pattern compiled for `ElixirScope.Query.DSL`: `{pattern, guard, bind names}`."
  @type compiled :: {term(), term(), [String.t()]}

  defstruct [:kind, :source, :module, function: :_, arity: :_, pattern: nil]

  # The VM's and the tracer's own modules (ElixirScope's are added from its application spec).
  @vm [:erlang, :erts_internal, :init, :prim_file, :prim_inet, :erl_tracer, :erl_prim_loader]
  # What printing a line runs through, in the watch's process or the group leader's: tracing
  # them would trace the printing of each traced call.
  @printing [
    IO,
    :io,
    :io_lib,
    :io_lib_format,
    :io_lib_pretty,
    :unicode,
    :unicode_util,
    :group,
    :user,
    :user_drv,
    :user_sup,
    :prim_tty,
    :standard_error,
    :logger,
    Logger,
    String.Chars,
    Inspect,
    Inspect.Algebra,
    Inspect.Opts
  ]
  @core_apps [:kernel, :stdlib, :elixir, :erts, :compiler, :logger]

  @doc """
  Reads a call pattern.

  ## Examples

      iex> p = ElixirScope.Watch.Pattern.calls!("Enum.member?(list, x) when x > 10")
      iex> {p.module, p.function, p.arity}
      {Enum, :member?, 2}
      iex> ElixirScope.Watch.Pattern.calls!("String.trim/1") |> Map.take([:function, :arity])
      %{arity: 1, function: :trim}
      iex> ElixirScope.Watch.Pattern.calls!("Enum")
      ** (ArgumentError) refused pattern "Enum": every function of Enum at once would trace every process's calls to OTP's or Elixir's core modules; name a function ("Enum.fun" or "Enum.fun/arity")
  """
  @spec calls!(String.t()) :: t()
  def calls!(source) when is_binary(source) do
    ast = DSL.parse_string!(source)

    {call, guard} =
      case ast do
        {:when, _, [call, guard]} -> {call, guard}
        call -> {call, nil}
      end

    p = call!(call, guard, source)
    refuse_dangerous!(p)
    p
  end

  def calls!(other) do
    raise ArgumentError,
          "a call pattern is a string such as \"MyApp.Repo.get(_, id) when id > 10\", got: " <>
            inspect(other)
  end

  @doc """
  Reads a message pattern. It matches a message as it is, and also the request inside a
  GenServer call or cast (`{:"$gen_call", from, request}`, `{:"$gen_cast", request}`), so
  `"{:deposit, n}"` finds `GenServer.cast(bank, {:deposit, 5})` too. (`pattern` holds the three
  compiled patterns.)

  ## Examples

      iex> ElixirScope.Watch.Pattern.messages!("{:deposit, n} when n > 100").kind
      :messages
  """
  @spec messages!(String.t()) :: t()
  def messages!(source) when is_binary(source) do
    {message, guard} =
      case DSL.parse_string!(source) do
        {:when, _, [message, guard]} -> {message, guard}
        message -> {message, nil}
      end

    patterns =
      for p <- [
            message,
            {:"$gen_cast", message},
            {:{}, [], [:"$gen_call", {:_, [], nil}, message]}
          ] do
        DSL.compile_parsed!(if guard, do: {:when, [], [p, guard]}, else: p)
      end

    %__MODULE__{kind: :messages, source: source, pattern: patterns}
  end

  def messages!(other) do
    raise ArgumentError,
          "a message pattern is a string such as \"{:deposit, n} when n > 100\", got: " <>
            inspect(other)
  end

  @doc "The `{module, function, arity}` the pattern covers, with `:_` wildcards."
  @spec mfa(t()) :: {module(), atom(), non_neg_integer() | :_}
  def mfa(%__MODULE__{module: m, function: f, arity: a}), do: {m, f, a}

  @doc """
  The pattern in words, for the watch's first line.

  ## Examples

      iex> ElixirScope.Watch.Pattern.calls!("Enum.member?(l, x) when x > 10") |> ElixirScope.Watch.Pattern.describe()
      "calls of Enum.member?/2 matching (l, x) when x > 10"
  """
  @spec describe(t()) :: String.t()
  def describe(%__MODULE__{kind: :messages, source: s}), do: "messages matching #{s}"

  def describe(%__MODULE__{} = p) do
    what =
      case {p.function, p.arity} do
        {:_, _} -> "every function of #{inspect(p.module)}"
        {f, :_} -> String.replace_suffix(Exception.format_mfa(p.module, f, 0), "/0", "/*")
        {f, a} -> Exception.format_mfa(p.module, f, a)
      end

    case p.pattern do
      nil -> "calls of #{what}"
      _ -> "calls of #{what} matching #{args_source(p.source)}"
    end
  end

  # "Mod.fun(a, b) when g" -> "(a, b) when g"
  defp args_source(source) do
    case :binary.match(source, "(") do
      {i, _} -> binary_part(source, i, byte_size(source) - i)
      :nomatch -> source
    end
  end

  # Mod.fun/arity
  defp call!({:/, _, [{{:., _, [mod, fun]}, _, []}, arity]}, nil, source)
       when is_integer(arity) and arity >= 0 and arity <= 255 do
    %__MODULE__{
      kind: :calls,
      source: source,
      module: module!(mod, source),
      function: function!(fun, source),
      arity: arity
    }
    |> exists!()
  end

  # Mod.fun(args) or Mod.fun
  defp call!({{:., _, [mod, fun]}, meta, args}, guard, source) when is_list(args) do
    p = %__MODULE__{
      kind: :calls,
      source: source,
      module: module!(mod, source),
      function: function!(fun, source)
    }

    if meta[:no_parens] && args == [] do
      if guard, do: bad!(source, "a guard needs the arguments it tests: Mod.fun(a, b) when ...")
      exists!(p)
    else
      pattern = if guard, do: {:when, [], [args, guard]}, else: args
      p = exists!(%{p | arity: length(args)})
      %{p | pattern: DSL.compile_parsed!(pattern)}
    end
  end

  # A module alone.
  defp call!(mod, nil, source) when is_atom(mod) or is_tuple(mod) do
    %__MODULE__{kind: :calls, source: source, module: module!(mod, source)} |> exists!()
  end

  defp call!(_ast, _guard, source) do
    bad!(source, "expected Mod.fun(args) [when guard], Mod.fun/arity, Mod.fun or Mod")
  end

  defp module!({:__aliases__, _, parts}, source) do
    if Enum.all?(parts, &is_atom/1) do
      try do
        Module.safe_concat(parts)
      rescue
        ArgumentError -> unknown!(source, Enum.map_join(parts, ".", &Atom.to_string/1))
      end
    else
      unknown!(source, Enum.map_join(parts, ".", &name/1))
    end
  end

  defp module!(mod, _source) when is_atom(mod) and mod not in [nil, true, false], do: mod
  defp module!(%{__name__: name}, source), do: unknown!(source, ":" <> name)
  defp module!(_other, source), do: bad!(source, "the module must be an alias or an atom")

  defp function!(fun, _source) when is_atom(fun), do: fun
  defp function!(%{__name__: name}, source), do: unknown!(source, "function #{name}")

  defp name(a) when is_atom(a), do: Atom.to_string(a)
  defp name(%{__name__: n}), do: n
  defp name(other), do: inspect(other)

  # The module must be loadable and have the function (of that arity, when given).
  defp exists!(%__MODULE__{module: m, function: f, arity: a} = p) do
    case Code.ensure_loaded(m) do
      {:module, ^m} ->
        functions = m.module_info(:functions)

        cond do
          f == :_ ->
            p

          Enum.any?(functions, fn {ff, aa} -> ff == f and (a == :_ or aa == a) end) ->
            p

          a == :_ ->
            unknown!(
              p.source,
              "function #{Exception.format_mfa(m, f, 0)}" |> String.replace_suffix("/0", "")
            )

          true ->
            unknown!(p.source, "function #{Exception.format_mfa(m, f, a)}")
        end

      _ ->
        unknown!(p.source, "module #{inspect(m)}")
    end
  end

  defp refuse_dangerous!(%__MODULE__{module: m, function: f} = p) do
    own = Application.spec(:elixir_scope, :modules) || []

    cond do
      m in @vm or m in own ->
        refuse!(
          p,
          "#{inspect(m)} is the VM's or ElixirScope's own: tracing it would trace the tracer"
        )

      m in @printing or inspect_impl?(m) ->
        refuse!(
          p,
          "#{inspect(m)} prints the watch's own lines: each printed call would be traced"
        )

      f == :_ and core?(m) ->
        refuse!(
          p,
          "every function of #{inspect(m)} at once would trace every process's calls to OTP's " <>
            "or Elixir's core modules; name a function (\"#{inspect(m)}.fun\" or " <>
            "\"#{inspect(m)}.fun/arity\")"
        )

      true ->
        :ok
    end
  end

  defp inspect_impl?(m), do: String.starts_with?(Atom.to_string(m), "Elixir.Inspect.")

  defp core?(m),
    do: :application.get_application(m) in Enum.map(@core_apps, &{:ok, &1}) or preloaded?(m)

  defp preloaded?(m), do: :code.which(m) == :preloaded

  defp refuse!(p, why), do: raise(ArgumentError, "refused pattern #{inspect(p.source)}: #{why}")

  defp unknown!(source, what),
    do: raise(ArgumentError, "invalid call pattern #{inspect(source)}: unknown #{what}")

  defp bad!(source, why),
    do: raise(ArgumentError, "invalid call pattern #{inspect(source)}: #{why}")
end
