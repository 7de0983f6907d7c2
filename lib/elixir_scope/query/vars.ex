defmodule ElixirScope.Query.Vars do
  @moduledoc """
  What tracked functions (`use ElixirScope.Track`) bound: the bindings of one call, one
  variable across calls, and a function's source with the recorded values beside each line.

  `ElixirScope.Query` delegates to these functions.

  A call is identified by its entry event (a `:var` event whose `data` is `{:"$call", line,
  nil}`); each binding is a `:var` event whose `peer` is that entry's seq and whose `data` is
  `{name, line, value}`.
  """

  alias ElixirScope.{Args, Event, Query}

  @typedoc "A recorded binding."
  @type binding :: %{name: atom(), value: term(), line: non_neg_integer(), seq: pos_integer()}

  @typedoc "Which call: its entry event, a function, a module, or a process (its last call)."
  @type target :: Event.t() | mfa() | module() | pid()

  defp store_opts(opts) do
    opts = Args.opts!(opts)
    Keyword.put(opts, :store, Query.store!(Keyword.get(opts, :store)))
  end

  # The events filter of a function or module (`pid?`: or a process).
  defp target_filter!(pid, true) when is_pid(pid), do: [pid: pid]
  defp target_filter!(mod, _pid?) when is_atom(mod) and mod not in [nil, :_], do: [mfa: mod]

  defp target_filter!({m, f} = mfa, _pid?)
       when is_atom(m) and m not in [nil, :_] and is_atom(f),
       do: [mfa: mfa]

  defp target_filter!({m, f, a} = mfa, _pid?)
       when is_atom(m) and m not in [nil, :_] and is_atom(f) and
              (a == :_ or (is_integer(a) and a in 0..255)),
       do: [mfa: mfa]

  defp target_filter!(other, pid?) do
    Args.bad!(
      "target",
      other,
      "#{if pid?, do: "a pid, ", else: ""}a module or {module, function, arity} " <>
        "(function and arity may be :_)"
    )
  end

  @doc """
  The tracked calls of `target` (an `{m, f, a}`, a module or a pid), as entry events, oldest
  first.

  ## Examples

      iex> ElixirScope.Query.Vars.calls(Enum, store: ElixirScope.Store.new!())
      []
  """
  @spec calls(mfa() | module() | pid(), keyword()) :: [Event.t()]
  def calls(target, opts \\ []) do
    opts = store_opts(opts)
    filter = target_filter!(target, true)

    Query.events(opts ++ filter ++ [kind: :var])
    |> Enum.filter(&match?({:"$call", _, _}, &1.data))
  end

  @doc """
  The bindings of one call, in the order they happened: `[%{name, value, line, seq}]`.

  `target` is a call's entry event, or an `{m, f, a}`, a module or a pid, meaning its last
  tracked call (`call: :first` or `call: n` picks another: n counts from 0, oldest first;
  `call: :last` is the default). `[]` when no such call was recorded.

  When no call was recorded because the function cannot record any, the answer says why:
  `{:error, {:not_tracked, target, why}}`, where `why` is `:not_loaded` (no such module),
  `:no_track` (the module does not `use ElixirScope.Track`), `:disabled` (compiled with
  `config :elixir_scope, track: false`, the default in `:prod`) or `:not_annotated` (no
  `@scope` for that function, nor `all: true`).
  """
  @spec variables(target(), keyword()) ::
          [binding()] | {:error, {:not_tracked, mfa() | module(), atom()}}
  def variables(target, opts \\ [])

  def variables(%Event{kind: :var, data: {:"$call", _, _}} = entry, opts) do
    opts = opts |> Args.opts!() |> Keyword.delete(:call) |> store_opts()

    # By function, not by process: an fn defined in the call may run in another process (a
    # Task, an Agent), and records its bindings there, still pointing at this call.
    Query.events(opts ++ [mfa: entry.mfa, kind: :var, after_seq: entry.seq])
    |> Enum.filter(&(&1.peer == entry.seq))
    |> Enum.map(&to_binding/1)
  end

  def variables(target, opts) do
    case entry(target, opts) do
      nil ->
        case tracked(target) do
          {:ok, _} -> []
          error -> error
        end

      entry ->
        variables(entry, Keyword.delete(opts, :call))
    end
  end

  @doc false
  # What the compiled code says of `target`: `{:ok, names}` (the variables its tracked
  # functions record, `nil` when unknown: a pid), or why it records nothing.
  @spec tracked(target()) :: {:ok, [atom()] | nil} | {:error, {:not_tracked, term(), atom()}}
  def tracked(pid) when is_pid(pid), do: {:ok, nil}

  def tracked(target) do
    {mod, fun, arity} =
      case target do
        {m, f, a} -> {m, f, a}
        {m, f} -> {m, f, :_}
        m -> {m, :_, :_}
      end

    with {:module, ^mod} <- Code.ensure_loaded(mod),
         true <- function_exported?(mod, :__elixir_scope_tracked__, 0) || :no_track,
         %{rewritten: rewritten, functions: funs} <- mod.__elixir_scope_tracked__() do
      matching = for {{f, a}, names} <- funs, fun in [:_, f], arity in [:_, a], do: names

      cond do
        matching == [] -> {:error, {:not_tracked, target, :not_annotated}}
        not rewritten or :disabled in matching -> {:error, {:not_tracked, target, :disabled}}
        true -> {:ok, matching |> Enum.concat() |> Enum.uniq()}
      end
    else
      :no_track -> {:error, {:not_tracked, target, :no_track}}
      _ -> {:error, {:not_tracked, target, :not_loaded}}
    end
  end

  defp to_binding(%Event{data: {name, line, value}, seq: seq}),
    do: %{name: name, value: value, line: line, seq: seq}

  @doc """
  One variable across every tracked call of `module` (or `{m, f, a}`), oldest first:
  `[%{call: entry_seq, pid: pid, value: value, line: line, seq: seq}]`.

  An empty answer that is a mistake says so: `{:error, {:not_tracked, target, why}}` as in
  `variables/2`, or `{:error, {:not_bound, var, target, recorded}}` when the tracked code
  records no variable `var` (`recorded` lists the ones it does).
  """
  @spec var_history(module() | mfa(), atom(), keyword()) ::
          [map()]
          | {:error, {:not_tracked, term(), atom()} | {:not_bound, atom(), term(), [atom()]}}
  def var_history(module, var, opts \\ []) do
    opts = store_opts(opts)
    filter = target_filter!(module, false)
    var = Args.atom!(var, "var")

    history =
      Query.events(opts ++ filter ++ [kind: :var])
      |> Enum.filter(&match?({^var, _, _}, &1.data))
      |> Enum.map(fn %Event{data: {_, line, value}} = e ->
        %{call: e.peer, pid: e.pid, value: value, line: line, seq: e.seq}
      end)

    case {history, tracked(module)} do
      {[_ | _], _} ->
        history

      {[], {:ok, names}} when is_list(names) ->
        if var in names, do: [], else: {:error, {:not_bound, var, module, names}}

      {[], {:ok, _}} ->
        []

      {[], error} ->
        error
    end
  end

  @doc """
  The source of a tracked call's function with the values it recorded beside each line, as
  text for `IO.puts/1`. `target` as in `variables/2`. `{:error, reason}` when there is no such
  call or the source file cannot be read.
  """
  @spec source_view(target(), keyword()) :: String.t() | {:error, term()}
  def source_view(target, opts \\ []) do
    with {:ok, lines} <- source_lines(target, opts) do
      width = lines |> List.last() |> Map.fetch!(:line) |> Integer.to_string() |> String.length()

      Enum.map_join(lines, "\n", fn %{line: n, code: code, bindings: bs} ->
        values =
          case bs do
            [] ->
              ""

            bs ->
              "    # " <>
                Enum.map_join(
                  bs,
                  ", ",
                  &"#{&1.name} = #{inspect(&1.value, limit: 8, printable_limit: 60)}"
                )
          end

        String.pad_leading(Integer.to_string(n), width) <> " | " <> code <> values
      end)
    end
  end

  @doc """
  The lines of a tracked call's function, from its `def` to its `end`, each with the bindings
  the call recorded on it: `{:ok, [%{line: n, code: text, bindings: [binding]}]}`. `target` as in
  `variables/2`. `{:error, reason}` when there is no such call or the source file cannot be
  read.
  """
  @spec source_lines(target(), keyword()) ::
          {:ok, [%{line: pos_integer(), code: String.t(), bindings: [binding()]}]}
          | {:error, term()}
  def source_lines(target, opts \\ []) do
    entry = entry(target, opts)

    with %Event{mfa: {mod, _, _}, data: {:"$call", first, _}} <- entry || {:error, :no_call},
         {:ok, path} <- source(mod),
         {:ok, text} <- File.read(path) do
      bindings = variables(entry, opts)
      lines = String.split(text, "\n")
      last_binding = bindings |> Enum.map(& &1.line) |> Enum.max(fn -> first end)
      last = max(function_end(lines, first), last_binding)
      by_line = Enum.group_by(bindings, & &1.line)

      {:ok,
       for n <- first..max(last, first) do
         %{line: n, code: Enum.at(lines, n - 1, ""), bindings: Map.get(by_line, n, [])}
       end}
    else
      {:error, _} = e -> e
      _ -> {:error, :no_call}
    end
  end

  # The `end` closing a `def ... do` that starts at line `first` (same indentation), or `first`
  # itself for a one-line definition.
  defp function_end(lines, first) do
    head = Enum.at(lines, first - 1, "")
    indent = String.length(head) - String.length(String.trim_leading(head))

    if String.contains?(head, " do") and not String.contains?(head, "do:") do
      lines
      |> Enum.with_index(1)
      |> Enum.drop(first)
      |> Enum.take(500)
      |> Enum.find_value(first, fn {line, n} ->
        if String.trim(line) == "end" and
             String.length(line) - String.length(String.trim_leading(line)) == indent,
           do: n
      end)
    else
      first
    end
  end

  defp entry(%Event{kind: :var, data: {:"$call", _, _}} = e, _opts), do: e

  defp entry(%Event{} = e, _opts) do
    Args.bad!(
      "target",
      e,
      "a call's entry event (a :var event whose data is {:\"$call\", line, _}), " <>
        "a pid, a module or {module, function, arity}"
    )
  end

  defp entry(target, opts) do
    {which, opts} = Keyword.pop(Args.opts!(opts), :call, :last)

    unless which in [:first, :last] or (is_integer(which) and which >= 0),
      do: Args.bad!(:call, which, ":first, :last or a non-negative integer (counted from 0)")

    calls = calls(target, opts)

    case which do
      :last -> List.last(calls)
      :first -> List.first(calls)
      n -> Enum.at(calls, n)
    end
  end

  defp source(mod) do
    case mod.module_info(:compile)[:source] do
      nil -> {:error, :no_source}
      path -> {:ok, List.to_string(path)}
    end
  rescue
    _ -> {:error, :no_source}
  end
end
