# Races queries of every kind against capture restarts, untraces and store switches (persisted
# rolls, opened traces made the default) for a bounded time. Run in a BEAM of its own by
# ElixirScope.StressTest: a memory error here kills this VM, not the test's.
#
#   elixir -pa _build/test/lib/elixir_scope/ebin test/support/scenarios/query_races.exs SECONDS DIR

[seconds, dir] = System.argv()
deadline = System.monotonic_time(:millisecond) + String.to_integer(seconds) * 1000
alias ElixirScope.{Query, Replay}

defmodule Races.Counter do
  use GenServer
  def init(n), do: {:ok, %{count: n, log: []}}

  def handle_cast(:inc, s),
    do: {:noreply, %{s | count: s.count + 1, log: Enum.take([s.count | s.log], 5)}}

  def handle_call(:get, _from, s), do: {:reply, s.count, s}
end

{:ok, sup} =
  Supervisor.start_link(
    [
      %{id: :agent, start: {Agent, :start_link, [fn -> 0 end, [name: Races.Agent]]}},
      %{id: :counter, start: {GenServer, :start_link, [Races.Counter, 0, [name: Races.Counter]]}}
    ],
    strategy: :one_for_one
  )

# Load: the traced processes keep changing state.
load = fn fun ->
  spawn(fn ->
    Stream.repeatedly(fn ->
      try do
        fun.()
      catch
        _, _ -> Process.sleep(1)
      end
    end)
    |> Stream.run()
  end)
end

load.(fn -> Agent.update(Races.Agent, &(&1 + 1)) end)
load.(fn -> GenServer.cast(Races.Counter, :inc) && GenServer.call(Races.Counter, :get) end)

target = fn -> Process.whereis(Races.Agent) || self() end
counter = fn -> Process.whereis(Races.Counter) || self() end

history = [
  fn -> Query.state_at(target.(), :now) end,
  fn -> Query.states_at(:now) end,
  fn -> Query.active_processes_at(:now) end
]

# The history queries (which catch the index up on a dirty scheduler) come back often.
queries =
  (history ++
     [
       fn -> Query.events(limit: 50) end,
       fn -> Query.events(pid: counter.(), order: :desc, limit: 20) end,
       fn -> Query.count(kind: :receive) end,
       fn -> Query.find(message: "{:\"$gen_cast\", _}", limit: 5) end,
       fn -> Query.top([], :pid, 3) end,
       fn -> Query.group_by([kind: :send], :tag) end,
       fn -> Query.durations([], :mfa) end,
       fn -> Query.state_at(target.(), :now) end,
       fn -> Query.states_at(:now) end,
       fn -> Query.active_processes_at(:now) end,
       fn -> Query.system_snapshot_at(:now) end,
       fn -> Query.supervision_tree_at(:now) end,
       fn -> Query.pending_messages_at(counter.(), :now) end,
       fn -> Query.call_stack_at(counter.(), :now) end,
       fn -> Query.key_changes(counter.(), :count) end,
       fn -> Query.state_timeline(counter.()) end,
       fn -> Query.why_crashed(target.()) end,
       fn -> with {:ok, r} <- Replay.open(:start, pid: counter.()), do: Replay.next(r) end
     ])
  |> Enum.flat_map(&[&1 | history])

counts = :counters.new(2, [])
# A default store from the start: the store stays the default after stop/0.
{:ok, _} = ElixirScope.start(max_events: 1_000)
ElixirScope.stop()

for i <- 1..3 do
  spawn_link(fn ->
    Stream.iterate(i, &(&1 + 1))
    |> Enum.each(fn n ->
      try do
        Enum.at(queries, rem(n, length(queries))).()
        :counters.add(counts, 1, 1)
      rescue
        # A query must answer (or return an error), not raise: the first few are shown.
        e ->
          :counters.add(counts, 2, 1)
          if :counters.get(counts, 2) <= 5, do: IO.puts("raised: " <> Exception.message(e))
      catch
        kind, reason ->
          :counters.add(counts, 2, 1)
          if :counters.get(counts, 2) <= 5, do: IO.puts("#{kind}: #{inspect(reason)}")
      end
    end)
  end)
end

# Most cycles are quick (a store switch every few ms); some persist (and roll their store over)
# or save and make the opened trace the default.
quick = fn n ->
  {:ok, _} = ElixirScope.start(max_events: 2_000 + rem(n, 2) * 48_000)
  ElixirScope.trace(Races.Agent)
  if rem(n, 2) == 0, do: ElixirScope.trace(Races.Counter)
  if rem(n, 5) == 0, do: ElixirScope.trace(:new)
  Process.sleep(rem(n, 4) + 2)
  if rem(n, 3) == 0, do: ElixirScope.untrace(Races.Agent)
  if rem(n, 7) == 0, do: ElixirScope.untrace(:all)
  ElixirScope.stop()
end

persisted = fn n ->
  dir = Path.join(dir, "persisted#{n}")
  {:ok, _} = ElixirScope.start(max_events: 2_000, persist: [dir: dir, flush_interval: 5])
  ElixirScope.trace(Races.Counter)
  ElixirScope.trace(sup)
  Process.sleep(30)
  ElixirScope.stop()
  File.rm_rf!(dir)
end

saved = fn n ->
  path = Path.join(dir, "saved#{n}")
  {:ok, _} = ElixirScope.start(max_events: 5_000)
  ElixirScope.trace(Races.Agent)
  Process.sleep(5)
  ElixirScope.save(path)
  ElixirScope.stop()
  # The opened trace becomes the default store while queries run.
  ElixirScope.open(path, default: true)
  Process.sleep(5)
  File.rm_rf!(path)
end

cycle = fn n ->
  case rem(n, 12) do
    10 -> persisted.(n)
    11 -> saved.(n)
    _ -> quick.(n)
  end
end

n =
  Stream.iterate(0, &(&1 + 1))
  |> Stream.take_while(fn _ -> System.monotonic_time(:millisecond) < deadline end)
  |> Enum.reduce(0, fn n, _ ->
    cycle.(n)
    n + 1
  end)

IO.puts(
  "cycles: #{n}, queries: #{:counters.get(counts, 1)}, refused: #{:counters.get(counts, 2)}"
)
