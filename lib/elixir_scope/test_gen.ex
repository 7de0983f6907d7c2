defmodule ElixirScope.TestGen do
  @moduledoc """
  ExUnit tests written from a trace: what a `GenServer` (or `:gen_statem`) process received and
  answered, replayed against its callback module.

      {:ok, source} = ElixirScope.TestGen.generate(pid)
      File.write!("test/regressions/account_replay_test.exs", source)

  The test drives the callbacks directly, in the order they ran: it starts from the state the
  first one was given, calls each `handle_call/3`, `handle_cast/2`, `handle_info/2`,
  `handle_continue/2` (or, for a `:gen_statem`, `handle_event/4` or a state function) with the
  recorded request, and asserts the recorded result: the reply and the new state, whole. A
  `GenServer`'s state is threaded from one call to the next, so a change of behaviour early on
  fails every later step too. A call that raised ends the test with the same exception
  (`assert_raise`), as the recorded crash did.

  A term that is not data (a pid, a reference, a function) cannot be written in a test: the
  caller of a call is a fresh `{self(), make_ref()}` (and stands in wherever the recorded
  caller appeared in a result), and a result holding other such terms is checked by shape
  only, said in a comment. A state or result cut by `max_payload_bytes` cannot be replayed:
  `{:error, {:truncated, seq}}`; one whose arguments hold a pid, a reference or a function
  (other than the caller) cannot be written as a test: `{:error, {:not_data, seq}}`.

  ## Examples

      iex> ElixirScope.TestGen.generate(self(), :all, store: ElixirScope.Store.new!())
      {:error, :no_callbacks}
  """

  alias ElixirScope.{Event, Query}

  @callbacks [handle_call: 3, handle_cast: 2, handle_info: 2, handle_continue: 2, handle_event: 4]

  @doc """
  The source of an ExUnit test module replaying `pid`'s callbacks over `window` (`:all` or
  `{from, to}` as in `ElixirScope.Query.summarize/3`). Options: `:store`, `:module` (the test
  module's name, default `<Callback>ReplayTest`).
  """
  @spec generate(ElixirScope.Query.Names.process(), :all | {term(), term()}, keyword()) ::
          {:ok, String.t()}
          | {:error, :no_callbacks | {:truncated, pos_integer()} | {:not_data, pos_integer()}}
  def generate(target, window \\ :all, opts \\ []) do
    opts = ElixirScope.Options.validate!(opts, store: nil, module: nil)
    store = Query.store!(opts[:store])
    pid = Query.Names.resolve!(target, store, "target")
    bounds = if window == :all, do: [], else: [since: elem(window, 0), until: elem(window, 1)]

    pairs =
      Query.events([store: store, pid: pid, kind: [:call, :return, :exception]] ++ bounds)
      |> pair()

    # The callback module: the one whose handle_* functions ran; its steps are its callbacks
    # (and a :gen_statem's state functions), not other functions it called.
    module =
      Enum.find_value(pairs, fn {%Event{mfa: {m, f, a}}, _} -> if {f, a} in @callbacks, do: m end)

    steps = Enum.filter(pairs, fn {call, _} -> callback?(call.mfa, module) end)

    with [{%Event{mfa: {module, _, _}}, _} | _] <- steps,
         :ok <- whole(steps),
         :ok <- writable(steps) do
      {:ok, source(module, pid, steps, opts[:module])}
    else
      [] -> {:error, :no_callbacks}
      {:truncated, _} = t -> {:error, t}
      {:not_data, _} = n -> {:error, n}
    end
  end

  # Every argument a step passes (but its caller) can be written as code.
  defp writable(steps) do
    Enum.find_value(steps, :ok, fn {%Event{mfa: {_, f, _}, data: args} = call, _} ->
      {from, args} = caller(f, args)
      if Enum.all?(args, &data?(&1, from)), do: nil, else: {:not_data, call.seq}
    end)
  end

  # Each call with the return or exception that ended it (the next one of the same function at
  # the same depth: callbacks do not nest in a process).
  defp pair(events) do
    {pairs, _} =
      Enum.reduce(events, {[], []}, fn
        %Event{kind: :call} = e, {acc, open} ->
          {acc, [e | open]}

        %Event{mfa: {m, f, a}} = e, {acc, [%Event{mfa: {m, f, a}} = c | open]} ->
          {[{c, e} | acc], open}

        _e, {acc, open} ->
          {acc, open}
      end)

    Enum.reverse(pairs)
  end

  defp callback?({m, f, a}, m),
    do:
      {f, a} in @callbacks or
        (a == 3 and statem?(m) and f not in [:init, :terminate, :code_change, :format_status])

  defp callback?(_, _), do: false

  defp statem?(module),
    do:
      is_atom(module) and Code.ensure_loaded?(module) and
        function_exported?(module, :callback_mode, 0)

  defp whole(steps) do
    Enum.find_value(steps, :ok, fn {c, r} ->
      Enum.find_value([c, r], fn e ->
        if match?(%Event.Truncated{}, e.data), do: {:truncated, e.seq}
      end)
    end)
  end

  defp source(module, pid, steps, name) do
    test_module = name || Module.concat([inspect(module) <> "ReplayTest"])
    [{first, _} | _] = steps

    genserver? =
      Enum.all?(steps, fn {%Event{mfa: {_, f, _}}, _} ->
        f in [:handle_call, :handle_cast, :handle_info, :handle_continue]
      end)

    initial = List.last(first.data)

    # A state changed between two callbacks (`:sys.replace_state/2`, a code change) is set
    # as recorded before the next step: threading cannot know it.
    {codes, _} =
      Enum.map_reduce(steps, initial, fn {%Event{data: args} = call, ended} = step, expected ->
        given = List.last(args)

        resync =
          if genserver? and given !== expected,
            do:
              "# the state changed outside a callback before ##{call.seq}\nstate = #{literal(given)}\n",
            else: ""

        next =
          case ended do
            %Event{kind: :return, data: result} -> recorded_state(result, given)
            _ -> given
          end

        {resync <> step_code(module, step, genserver?), next}
      end)

    body = Enum.join(codes, "\n\n")

    code = """
    defmodule #{inspect(test_module)} do
      # Written by ElixirScope.TestGen from #{length(steps)} recorded callback(s) of
      # #{inspect(pid)} (events ##{first.seq} to ##{elem(List.last(steps), 1).seq}).
      use ExUnit.Case, async: true

      test "replays the recorded callbacks of #{inspect(module)}" do
        #{if genserver?, do: "state = #{literal(initial)}", else: ""}
        #{body}
      end
    end
    """

    Code.format_string!(code) |> IO.iodata_to_binary() |> Kernel.<>("\n")
  end

  defp step_code(module, {%Event{mfa: {_, f, _}, data: args} = call, ended}, genserver?) do
    {from, args} = caller(f, args)
    # A GenServer's state is the last argument: the one the previous step left.
    arg_code =
      args
      |> Enum.with_index()
      |> Enum.map_join(", ", fn {a, i} ->
        cond do
          genserver? and i == length(args) - 1 -> "state"
          a == :__caller__ -> "from"
          true -> literal(a, from)
        end
      end)

    fresh = if from != nil, do: "from = {self(), make_ref()}\n", else: ""
    invoke = "#{inspect(module)}.#{f}(#{arg_code})"

    case ended do
      %Event{kind: :exception, data: {:error, %{__exception__: true, __struct__: ex}}} ->
        "# ##{call.seq}: it raised, as recorded (##{ended.seq})\n#{fresh}assert_raise #{inspect(ex)}, fn -> #{invoke} end"

      %Event{kind: :exception, data: {:throw, value}} ->
        "# ##{call.seq}: it threw, as recorded\n#{fresh}assert catch_throw(#{invoke}) == #{literal(value, from)}"

      %Event{kind: :exception, data: {class, reason}} ->
        "# ##{call.seq}: it ended with #{inspect(class)} #{inspect(reason, limit: 5)}\n#{fresh}assert catch_#{class}(#{invoke})"

      %Event{kind: :return, data: result} ->
        if data?(result, from) do
          next = if genserver?, do: "\nstate = #{new_state(result)}", else: ""

          "# ##{call.seq}\n#{fresh}result = #{invoke}\nassert result === #{literal(result, from)}#{next}"
        else
          "# ##{call.seq}: its result holds a pid, a reference or a function: checked by shape\n#{fresh}result = #{invoke}\nassert elem(result, 0) == #{inspect(elem(result, 0))}" <>
            if(genserver?, do: "\nstate = #{new_state(result)}", else: "")
        end
    end
  end

  # The caller of a call (the `from` of handle_call/3, in `{:call, from}` of a gen_statem
  # event): replaced by a fresh one.
  defp caller(:handle_call, [req, from, state]), do: {from, [req, :__caller__, state]}

  defp caller(f, [{:call, from} | rest])
       when f not in [:handle_info, :handle_cast, :handle_continue],
       do: {from, [{:call, :__caller__} | rest]}

  defp caller(_f, args), do: {nil, args}

  # The new state in a recorded GenServer result (its last element but a timeout or action).
  defp new_state(result) do
    case result do
      {:reply, _, _, _} -> "elem(result, 2)"
      {:reply, _, _} -> "elem(result, 2)"
      {:noreply, _, _} -> "elem(result, 1)"
      {:noreply, _} -> "elem(result, 1)"
      {:stop, _, _, _} -> "elem(result, 3)"
      {:stop, _, _} -> "elem(result, 2)"
      _ -> "state"
    end
  end

  # The new state a recorded GenServer result carries (`given` when it carries none).
  defp recorded_state(result, given) do
    case result do
      {:reply, _, s, _} -> s
      {:reply, _, s} -> s
      {:noreply, s, _} -> s
      {:noreply, s} -> s
      {:stop, _, _, s} -> s
      {:stop, _, s} -> s
      _ -> given
    end
  end

  # Whether `term` can be written as code (the caller stands for itself).
  defp data?(term, from) when term == from and from != nil, do: true
  defp data?(t, _) when is_pid(t) or is_reference(t) or is_port(t) or is_function(t), do: false
  defp data?(t, from) when is_list(t), do: proper?(t) and Enum.all?(t, &data?(&1, from))
  defp data?(%{__struct__: _} = s, from), do: data?(Map.from_struct(s), from)
  defp data?(t, from) when is_tuple(t), do: t |> Tuple.to_list() |> Enum.all?(&data?(&1, from))
  defp data?(%{} = m, from), do: Enum.all?(m, fn {k, v} -> data?(k, from) and data?(v, from) end)
  defp data?(_, _), do: true

  defp proper?([]), do: true
  defp proper?([_ | t]), do: proper?(t)
  defp proper?(_), do: false

  # Code for a data term, the recorded caller written as the variable `from`.
  defp literal(term, from \\ nil) do
    term
    |> replace(from)
    |> Macro.escape()
    |> Macro.prewalk(fn
      :__caller__ -> {:from, [], nil}
      other -> other
    end)
    |> Macro.to_string()
  end

  defp replace(term, nil), do: term
  defp replace(term, from) when term == from, do: :__caller__

  defp replace(t, from) when is_list(t) and t != [],
    do: if(proper?(t), do: Enum.map(t, &replace(&1, from)), else: t)

  defp replace(t, from) when is_tuple(t),
    do: t |> Tuple.to_list() |> Enum.map(&replace(&1, from)) |> List.to_tuple()

  defp replace(%{__struct__: _} = s, _from), do: s

  defp replace(%{} = m, from),
    do: Map.new(m, fn {k, v} -> {replace(k, from), replace(v, from)} end)

  defp replace(t, _from), do: t
end
