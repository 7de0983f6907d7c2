defmodule Bench.Workload do
  @moduledoc """
  The real events the query and persistence benchmarks share: `procs` GenServers each serve
  `calls` calls, from four client tasks, traced with state capture (receive, handle_call call
  and return, state, reply: 5 events per call) into a fresh store.
  """

  alias ElixirScope.{Store, Tracer}

  defmodule Server do
    @moduledoc false
    use GenServer
    def init(n), do: {:ok, %{n: n, hist: []}}

    def handle_call({:add, k}, _from, s),
      do: {:reply, s.n + k, %{s | n: s.n + k, hist: Enum.take([k | s.hist], 3)}}
  end

  @doc """
  Runs the calls; returns `{store, servers, t0, t1}` (monotonic ns around the calls). Tracing
  is stopped afterwards, so the store holds exactly the workload.
  """
  def run(procs, calls) do
    store = Store.new!(max_events: procs * calls * 6 + 10_000)
    servers = for i <- 1..procs, do: elem(GenServer.start(Server, i), 1)
    :ok = Tracer.watch_state_module(Server, store)
    for s <- servers, do: {:ok, _} = Tracer.snapshot_state(s, store)
    for s <- servers, do: :ok = Tracer.trace_pid(s, store, Tracer.flags())
    t0 = System.monotonic_time(:nanosecond)

    servers
    |> Enum.chunk_every(div(procs, 4) |> max(1))
    |> Enum.map(fn chunk ->
      Task.async(fn -> for _ <- 1..calls, s <- chunk, do: GenServer.call(s, {:add, 1}) end)
    end)
    |> Enum.each(&Task.await(&1, :infinity))

    t1 = System.monotonic_time(:nanosecond)
    for s <- servers, do: Tracer.untrace_pid(s, store)
    {store, servers, t0, t1}
  end
end
