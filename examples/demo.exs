# ElixirScope demo: a small supervised app (a supervisor, two GenServers and a worker that
# crashes), traced into the default store, then the captured timeline and a few queries.
#
#     scripts/demo            (or: mix run examples/demo.exs)

defmodule Demo.Counter do
  use GenServer
  def start_link(_), do: GenServer.start_link(__MODULE__, 0, name: __MODULE__)
  def increment(by), do: GenServer.call(__MODULE__, {:increment, by})
  def value, do: GenServer.call(__MODULE__, :value)
  @impl true
  def init(n), do: {:ok, n}
  @impl true
  def handle_call({:increment, by}, _from, n), do: {:reply, n + by, n + by}
  def handle_call(:value, _from, n), do: {:reply, n, n}
end

defmodule Demo.Cache do
  use GenServer
  def start_link(_), do: GenServer.start_link(__MODULE__, %{}, name: __MODULE__)
  def put(k, v), do: GenServer.cast(__MODULE__, {:put, k, v})
  def get(k), do: GenServer.call(__MODULE__, {:get, k})
  @impl true
  def init(map), do: {:ok, map}
  @impl true
  def handle_cast({:put, k, v}, map), do: {:noreply, Map.put(map, k, v)}
  @impl true
  def handle_call({:get, k}, _from, map), do: {:reply, Map.get(map, k), map}
end

defmodule Demo.Worker do
  use GenServer
  def start_link(_), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)
  def work(job), do: GenServer.call(__MODULE__, {:work, job})
  @impl true
  def init(:ok), do: {:ok, 0}
  @impl true
  def handle_call({:work, :poison}, _from, _done), do: raise(ArgumentError, "poison job")
  def handle_call({:work, job}, _from, done), do: {:reply, {:done, job}, done + 1}
end

defmodule Demo.Pricing do
  use ElixirScope.Track

  @scope true
  def total(items, discount) do
    subtotal = Enum.reduce(items, 0, fn {price, qty}, acc -> acc + price * qty end)
    discounted = subtotal * (1 - discount)
    Float.round(discounted, 2)
  end
end

defmodule Demo.Report do
  alias ElixirScope.Event

  def section(title), do: IO.puts("\n== #{title}")

  def timeline(events), do: IO.puts(ElixirScope.Format.timeline(events, width: 140))

  defp clip(line) when byte_size(line) > 140, do: binary_part(line, 0, 137) <> "..."
  defp clip(line), do: line

  def count(events), do: "#{length(events)} event(s)"
  def query(label, events), do: IO.puts("  #{String.pad_trailing(label, 44)} #{count(events)}")

  defp pairs(events), do: Enum.map(events, &Event.describe(&1, limit: 6))

  def show(label, events) do
    IO.puts("  #{label}:")
    Enum.each(pairs(events), &IO.puts(clip("    " <> &1)))
  end
end

Logger.configure(level: :critical)
alias ElixirScope.Query
alias Demo.Report, as: R

{:ok, _} = ElixirScope.start(max_events: 100_000)

children = [Demo.Counter, Demo.Cache, Demo.Worker]
{:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one, name: Demo.Supervisor)

# Trace the supervisor (and what it spawns from now on: restarted children), each child, this
# client process, and the GenServer modules' callbacks.
:ok = ElixirScope.trace(sup)
for {_, pid, _, _} <- Supervisor.which_children(sup), do: :ok = ElixirScope.trace(pid)
:ok = ElixirScope.trace(self(), children: false)
for mod <- children, do: :ok = ElixirScope.trace(mod, as: :module)

old_worker = Process.whereis(Demo.Worker)
Demo.Counter.increment(1)
between_increments = System.monotonic_time(:nanosecond)
Demo.Counter.increment(41)
Demo.Cache.put(:answer, Demo.Counter.value())
{:done, :report} = Demo.Worker.work(:report)
Demo.Cache.get(:answer)

# The worker crashes on a poison job; its supervisor restarts it.
before_crash = System.monotonic_time(:nanosecond)
ref = Process.monitor(old_worker)

try do
  Demo.Worker.work(:poison)
catch
  :exit, _ -> :crashed
end

receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
Process.sleep(50)
new_worker = Process.whereis(Demo.Worker)
{:done, :after_restart} = Demo.Worker.work(:after_restart)
Demo.Pricing.total([{10.0, 2}, {2.5, 4}], 0.1)

status = ElixirScope.status()
ElixirScope.untrace(:all)

R.section("Capture")

IO.puts(
  "  #{status.events} events stored, #{status.dropped} dropped, #{status.truncated} truncated, " <>
    "#{div(status.bytes, 1024)} KiB committed"
)

R.section("Timeline of Demo.Counter (#{inspect(Process.whereis(Demo.Counter))})")
R.timeline(Query.timeline(Process.whereis(Demo.Counter)))

R.section("Queries")
counter = Process.whereis(Demo.Counter)
R.query("message_flow(self(), Demo.Counter)", Query.message_flow(self(), counter))

R.query(
  "function_calls(Demo.Counter, :handle_call)",
  Query.function_calls(Demo.Counter, :handle_call)
)

R.query("messages_to(Demo.Cache)", Query.messages_to(Process.whereis(Demo.Cache)))
R.query("events(kind: :exception)", Query.events(kind: :exception))

R.show(
  "Counter's handle_call results",
  Query.events(mfa: {Demo.Counter, :handle_call, 3}, kind: :return)
)

R.section("Time travel")
counter = Process.whereis(Demo.Counter)

IO.puts(
  "  Demo.Counter's states: " <>
    Enum.map_join(Query.state_timeline(counter), " -> ", &inspect(&1.data))
)

{:ok, then} = Query.state_at(counter, between_increments)
IO.puts("  its state between the two increments: #{inspect(then)}")

tree = fn t ->
  [root] = Query.supervision_tree_at(t)
  Enum.map_join(root.children, ", ", &"#{inspect(&1.id)} #{inspect(&1.pid)}")
end

IO.puts("  supervision tree before the crash: #{tree.(before_crash)}")
IO.puts("  supervision tree now:              #{tree.(:now)}")

for %{data: e} <- Query.supervisor_events(sup) do
  IO.puts("  supervisor: #{e.action} #{inspect(e.id)} #{inspect(e.old_pid)} -> #{inspect(e.pid)}")
end

R.section("Why did the worker crash?")
{:ok, crash} = Query.why_crashed(old_worker)
IO.puts(ElixirScope.Crash.format(crash))
IO.puts("  restarted as #{inspect(new_worker)}")

R.section("Replay: the moment the worker took the poison job")

[fatal] =
  Query.events(
    pid: old_worker,
    mfa: {Demo.Worker, :handle_call, 3},
    kind: :call,
    order: :desc,
    limit: 1
  )

{:ok, cursor} = ElixirScope.Replay.open(fatal, pid: old_worker)
IO.puts(ElixirScope.Replay.format(cursor))
{:ok, cursor} = ElixirScope.Replay.next(cursor)
IO.puts(ElixirScope.Replay.format(cursor))

R.section("Variable tracking: Demo.Pricing.total/2, line by line")
IO.puts(Query.source_view({Demo.Pricing, :total, 2}))

ElixirScope.stop()

R.section("The trace on disk: saved, summarized, opened again")

dir =
  Path.join(System.tmp_dir!(), "elixir_scope_demo_trace_#{System.unique_integer([:positive])}")

{:ok, saved} = ElixirScope.save(dir)
{:ok, summary} = ElixirScope.Persist.summary(dir)

IO.puts(
  "  saved #{saved} events to #{dir}: #{summary.segments} segment(s), #{summary.bytes} bytes"
)

IO.puts("  by kind (from the segment's footer): #{inspect(Enum.sort(summary.kinds))}")
{:ok, disk} = ElixirScope.open(dir)
{:ok, again} = Query.state_at(counter, between_increments, store: disk)
IO.puts("  opened: the counter between the two increments, read from disk: #{inspect(again)}")
{:ok, crash_again} = Query.why_crashed(old_worker, store: disk)
IO.puts("  and why the worker crashed, again: #{inspect(crash_again.exception)}")
File.rm_rf!(dir)
