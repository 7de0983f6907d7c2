defmodule Bench.States do
  @moduledoc """
  W2, large states: a GenServer whose state is big, each call changing a little of it, traced
  with default options (ElixirScope) or `:dbg` with return trace, against the untraced loop and
  the no-op NIF tracer. Two states: a 10,000-entry map with one key updated per call, and a
  list of 10,000 elements growing by one per call.

  Per variant: µs per call; the extra cost against `:dbg`'s; the bytes the store grew by per
  call, against the full state's encoded size; whether `state_at/2` of the last state is the
  state `:sys.get_state/1` gives.
  """

  alias ElixirScope.{Query, Store, Tracer}
  alias Bench.Harness

  @n String.to_integer(System.get_env("BENCH_W2_N", "2000"))
  @size 10_000
  @events_per_call 4

  defmodule Server do
    @moduledoc false
    use GenServer
    def init(:map), do: {:ok, Map.new(1..10_000, &{&1, "value #{&1}"})}
    def init(:list), do: {:ok, Enum.to_list(1..10_000)}

    def handle_call({:put, k}, _from, s) when is_map(s),
      do: {:reply, :ok, Map.put(s, rem(k, 10_000) + 1, k)}

    def handle_call({:put, k}, _from, s), do: {:reply, :ok, [k | s]}
  end

  @doc "Runs every variant for both states and prints one table."
  def run(rounds) do
    for shape <- [:map, :list] do
      variants = variants(shape)

      Harness.header(
        "W2, large states: #{describe(shape)}, N=#{@n} calls, #{rounds} rounds (median)"
      )

      results = Harness.run(variants, rounds)
      full = full_size(shape)
      per_call = fn name -> results[name].median / @n end
      base = per_call.("untraced")
      dbg_extra = per_call.(":dbg, return trace") - base

      rows =
        for {name, _} <- variants do
          r = results[name]
          extra = per_call.(name) - base
          e = r.extra

          [
            name,
            Harness.f(per_call.(name), 1),
            if(name == "untraced", do: "-", else: Harness.f(extra, 1)),
            if(name == "untraced", do: "-", else: Harness.f(extra / dbg_extra) <> "x"),
            bytes_cell(e[:bytes], full),
            e[:exact] || "-"
          ]
        end

      Harness.table(
        [
          "variant",
          "µs/call",
          "extra µs/call",
          "extra vs :dbg",
          "stored bytes/call (of the state's #{div(full, 1000)} KB)",
          "state_at exact"
        ],
        rows
      )

      IO.puts("")
    end
  end

  defp describe(:map), do: "a #{@size}-entry map, one key updated per call"
  defp describe(:list), do: "a list of #{@size} elements growing by one per call"

  defp full_size(shape) do
    {:ok, s} = Server.init(shape)
    byte_size(:erlang.term_to_binary(s))
  end

  defp bytes_cell(nil, _), do: "-"

  defp bytes_cell(b, full),
    do: "#{Harness.f(b / @n / 1000, 1)} KB (#{Harness.f(100 * b / @n / full, 1)}%)"

  defp variants(shape) do
    [
      {"untraced", fn -> run(shape, fn _ -> nil end, fn _ -> true end, fn _, _ -> %{} end) end},
      {"no-op NIF tracer (floor)", fn -> null_tracer(shape) end},
      {":dbg, return trace", fn -> with_dbg(shape) end},
      {"ElixirScope (default options)", fn -> elixir_scope(shape) end}
    ]
  end

  # Starts a server of `shape`, traced by `setup`; makes the calls; waits for `drained?`.
  defp run(shape, setup, drained?, info) do
    {:ok, server} = GenServer.start(Server, shape)
    state = setup.(server)

    {us, _} =
      :timer.tc(fn ->
        for k <- 1..@n, do: GenServer.call(server, {:put, k})
        Harness.wait_until(fn -> drained?.(state) end)
      end)

    result = info.(state, server)
    :erlang.trace_pattern({Server, :_, :_}, false, [:local])
    :erlang.trace_pattern({Server, :_, :_}, false, [:global])
    :erlang.trace(server, false, [:all])
    GenServer.stop(server)
    {us, result}
  end

  defp null_tracer(shape) do
    run(
      shape,
      fn s ->
        :erlang.trace_pattern({Server, :handle_call, 3}, [{:_, [], [{:return_trace}]}], [:local])

        :erlang.trace(
          s,
          true,
          Tracer.flags() ++ [{:tracer, ElixirScope.Native, :elixir_scope_null_tracer}]
        )
      end,
      fn _ -> true end,
      fn _, _ -> %{} end
    )
  end

  defp with_dbg(shape) do
    run(
      shape,
      fn s ->
        counter = :counters.new(1, [])
        {:ok, _} = :dbg.tracer(:process, {fn _msg, c -> :counters.add(c, 1, 1) && c end, counter})
        {:ok, _} = :dbg.p(s, [:s, :r, :c, :procs])
        {:ok, _} = :dbg.tpl(Server, :handle_call, 3, [{:_, [], [{:return_trace}]}])
        counter
      end,
      fn c -> :counters.get(c, 1) >= @n * @events_per_call end,
      fn _, _ ->
        :dbg.stop()
        %{}
      end
    )
  end

  # What `ElixirScope.trace(pid)` does for a GenServer: its module watched for states, a first
  # snapshot, the process traced with the default flags, into a store with default options.
  defp elixir_scope(shape) do
    run(
      shape,
      fn s ->
        store = Store.new!(max_events: 1_000_000)
        :ok = Tracer.watch_state_module(Server, store)
        {:ok, _} = Tracer.snapshot_state(s, store)
        :ok = Tracer.trace_pid(s, store, Tracer.flags())
        {store, Store.stats(store).payload_bytes}
      end,
      fn _ -> true end,
      fn {store, bytes0}, server ->
        st = Store.stats(store)
        want = :sys.get_state(server)

        exact =
          case Query.state_at(server, :now, store: store) do
            {:ok, ^want} -> "yes"
            {:ok, %ElixirScope.Event.Truncated{}} -> "no (truncated)"
            other -> "no: #{inspect(other, limit: 3)}"
          end

        %{bytes: st.payload_bytes - bytes0, exact: exact}
      end
    )
  end
end
