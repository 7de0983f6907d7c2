defmodule ElixirScope.SeedTest do
  # The seed base's test scenarios (its TraceDB, StateRecorder, ProcessObserver,
  # MessageInterceptor and QueryEngine tests), ported to this API on real processes: the seed
  # stored hand-made events; here each scenario makes the processes do what the events
  # described and checks what the capture recorded. One global capture: one test at a time.
  use ExUnit.Case, async: false

  alias ElixirScope.{Event, Query, StateDiff}
  import ElixirScope.ScopeCase, only: [wait_until: 1, temp_path: 1]

  setup do
    ElixirScope.stop()
    on_exit(&ElixirScope.stop/0)
  end

  defp start!(opts \\ []) do
    {:ok, _} = ElixirScope.start(opts)
    :ok
  end

  defp now, do: System.monotonic_time(:nanosecond)

  # A process that sends each message to `to` when told, then waits to be told to exit.
  defp sender(to) do
    spawn(fn -> loop(to) end)
  end

  defp loop(to) do
    receive do
      {:send, msg} ->
        send(to, msg)
        loop(to)

      :crash ->
        exit(:crashed)

      :stop ->
        :ok
    end
  end

  defp sync(pid) do
    ref = Process.monitor(pid)
    send(pid, :stop)
    assert_receive {:DOWN, ^ref, _, _, _}
  end

  defmodule SimpleGenServer do
    use GenServer
    def init(state), do: {:ok, state}
    def handle_call(:get_state, _from, s), do: {:reply, s, s}

    def handle_call({:update, k, v}, _from, s) do
      s = Map.put(s, k, v)
      {:reply, s, s}
    end

    def handle_cast({:async_update, k, v}, s), do: {:noreply, Map.put(s, k, v)}
    def handle_info({:info_update, k, v}, s), do: {:noreply, Map.put(s, k, v)}
    def handle_info(_other, s), do: {:noreply, s}
  end

  describe "TraceDB: initialization" do
    test "starts with default options" do
      {:ok, pid} = ElixirScope.start()
      assert Process.alive?(pid)
      assert %{running: true, events: 0, capacity: 1_000_000} = ElixirScope.status()
    end

    test "starts with custom options" do
      start!(max_events: 5000, sample_rate: 0.5)
      assert %{capacity: 5000, sample_rate: 0.5} = ElixirScope.status()
    end
  end

  describe "TraceDB: event storage" do
    setup do: start!()

    test "stores basic events" do
      :ok = ElixirScope.trace(self())
      child = spawn(fn -> :ok end)
      me = self()
      wait_until(fn -> Query.process_spawns() != [] end)
      assert [%Event{kind: :spawn, pid: ^me, peer: ^child, seq: seq}] = Query.process_spawns()
      assert is_integer(seq)
    end

    test "assigns unique ids (seqs) to events" do
      :ok = ElixirScope.trace(self())
      for i <- 1..3, do: send(self(), {:test, i})
      # (Filtered: the test process also talks to the code server, loading modules.)
      seqs =
        Query.messages_from(self())
        |> Enum.filter(&match?({:test, _}, &1.data))
        |> Enum.map(& &1.seq)

      assert length(seqs) == 3 and length(Enum.uniq(seqs)) == 3
    end

    test "indexes events by pid" do
      sink = spawn(fn -> Process.sleep(:infinity) end)
      p1 = sender(sink)
      p2 = sender(sink)
      :ok = ElixirScope.trace(p1)
      :ok = ElixirScope.trace(p2)
      send(p1, {:send, :test1})
      send(p2, {:send, :test2})
      send(p1, {:send, :test3})
      sync(p1)
      sync(p2)
      assert [:test1, :test3] = Query.messages_from(p1) |> Enum.map(& &1.data)
      assert [:test2] = Query.messages_from(p2) |> Enum.map(& &1.data)
      assert Enum.all?(Query.events(pid: p1), &(&1.pid == p1))
    end

    test "stores complex data structures" do
      complex = %{
        list: [1, 2, [3, 4]],
        tuple: {:a, :b, {:c}},
        map: %{nested: %{deep: "value"}},
        binary: <<1, 2, 3>>,
        set: MapSet.new([1, 2, 3])
      }

      :ok = ElixirScope.trace(self())
      send(self(), {:complex, complex})
      assert_receive {:complex, _}

      assert [%{data: {:complex, ^complex}}] =
               Enum.filter(Query.messages_to(self()), &match?({:complex, _}, &1.data))
    end
  end

  describe "TraceDB: sampling" do
    test "records all events with sample_rate 1.0" do
      start!(sample_rate: 1.0)
      sink = spawn(fn -> Process.sleep(:infinity) end)
      p = sender(sink)
      :ok = ElixirScope.trace(p)
      for i <- 1..10, do: send(p, {:send, i})
      sync(p)
      assert length(Query.messages_from(p)) == 10
    end

    test "records no sampled events with sample_rate 0.0" do
      start!(sample_rate: 0.0)
      sink = spawn(fn -> Process.sleep(:infinity) end)
      p = sender(sink)
      :ok = ElixirScope.trace(p)
      for i <- 1..10, do: send(p, {:send, i})
      sync(p)
      assert Query.messages_from(p) == []
    end

    test "critical events bypass sampling: spawn, exit and crash are always recorded" do
      start!(sample_rate: 0.0)
      :ok = ElixirScope.trace(self())
      parent = self()
      ok = spawn(fn -> send(parent, :hi) end)
      crasher = spawn(fn -> exit(:crash) end)
      assert_receive :hi
      wait_until(fn -> length(Query.process_exits()) >= 2 end)
      exits = Map.new(Query.process_exits(), &{&1.pid, &1.data})
      assert exits[ok] == :normal and exits[crasher] == :crash

      assert Enum.sort([ok, crasher]) ==
               Query.process_spawns() |> Enum.map(& &1.peer) |> Enum.sort()

      # The messages are sampled away.
      assert Query.messages_from(ok) == [] and Query.messages_from(self()) == []
    end

    test "sampling is deterministic: a process is kept whole or not at all" do
      start!(sample_rate: 0.5, sample_by: :process)
      sink = spawn(fn -> Process.sleep(:infinity) end)
      ps = for _ <- 1..20, do: sender(sink)
      Enum.each(ps, &(:ok = ElixirScope.trace(&1)))
      for p <- ps, i <- 1..2, do: send(p, {:send, i})
      Enum.each(ps, &sync/1)

      for p <- ps do
        assert length(Query.messages_from(p)) in [0, 2]
      end
    end
  end

  describe "TraceDB: queries" do
    setup do: start!()

    test "query by type" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{})
      :ok = ElixirScope.trace(server)
      GenServer.call(server, {:update, :a, 1})

      for kind <- [:state, :receive, :send] do
        evs = Query.events(kind: kind, pid: server)
        assert evs != [] and Enum.all?(evs, &(&1.kind == kind))
      end
    end

    test "query by pid" do
      {:ok, s1} = GenServer.start(SimpleGenServer, %{n: 1})
      {:ok, s2} = GenServer.start(SimpleGenServer, %{n: 2})
      :ok = ElixirScope.trace(s1)
      :ok = ElixirScope.trace(s2)
      assert [%{data: %{n: 1}}] = Query.events(kind: :state, pid: s1)
      assert [%{data: %{n: 2}}] = Query.events(kind: :state, pid: s2)
    end

    test "query by timestamp range" do
      :ok = ElixirScope.trace(self())
      send(self(), {:msg, :old})
      Process.sleep(2)
      t1 = now()
      send(self(), {:msg, :middle})
      Process.sleep(2)
      t2 = now()
      send(self(), {:msg, :current})
      data = &Enum.map(Query.messages_from(self(), [peer: self()] ++ &1), fn e -> e.data end)
      assert [{:msg, :old}] = data.(until: t1)
      assert [{:msg, :middle}] = data.(since: t1, until: t2)
      assert [{:msg, :current}] = data.(since: t2)
    end

    test "combined filters" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{})
      :ok = ElixirScope.trace(server)
      t = now()
      GenServer.call(server, {:update, :s, 1})
      GenServer.call(server, {:update, :s, 2})
      evs = Query.events(kind: :state, pid: server, since: t)
      assert [%{s: 1}, %{s: 2}] = Enum.map(evs, & &1.data)
      assert Enum.all?(evs, &(&1.kind == :state and &1.pid == server and &1.ts >= t))
    end
  end

  describe "TraceDB: state history" do
    setup do: start!()

    test "state_timeline returns the state changes of a process" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{counter: 0})
      :ok = ElixirScope.trace(server)
      for n <- 1..3, do: GenServer.call(server, {:update, :counter, n})
      timeline = Query.state_timeline(server)
      assert [0, 1, 2, 3] = Enum.map(timeline, & &1.data.counter)
      ts = Enum.map(timeline, & &1.ts)
      assert ts == Enum.sort(ts) and length(Enum.uniq(ts)) == 4
    end

    test "events around a time (get_events_at)" do
      :ok = ElixirScope.trace(self())
      send(self(), :before)
      Process.sleep(5)
      t = now()
      send(self(), :inside)
      Process.sleep(5)
      send(self(), :after)
      window = 2_000_000
      around = Query.execution_timeline(t - window, t + window, kind: :send)
      assert :inside in Enum.map(around, & &1.data)
      assert Enum.all?(around, &(abs(&1.ts - t) <= window))
      assert Enum.map(around, & &1.seq) == Enum.sort(Enum.map(around, & &1.seq))
    end

    test "get_state_at is {:error, :not_found} before any state, then the state in force" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{counter: 1})
      before = now()
      :ok = ElixirScope.trace(server)
      GenServer.call(server, {:update, :counter, 2})
      mid = now()
      GenServer.call(server, {:update, :counter, 3})
      assert {:error, :not_found} = Query.get_state_at(server, before)
      assert {:ok, %{counter: 2}} = Query.get_state_at(server, mid)
      assert {:ok, %{counter: 3}} = Query.get_state_at(server, now())
    end

    test "the next event after and the previous event before a time" do
      :ok = ElixirScope.trace(self())
      for step <- 1..2, do: send(self(), {:step, step})
      Process.sleep(2)
      checkpoint = now()
      for step <- 3..4, do: send(self(), {:step, step})
      steps = [any: [[kind: :send, peer: self()]]]
      assert [%{data: {:step, 3}}] = Query.events(steps ++ [since: checkpoint, limit: 1])

      assert [%{data: {:step, 2}}] =
               Query.events(steps ++ [until: checkpoint, order: :desc, limit: 1])

      assert [] = Query.events(until: checkpoint - 60_000_000_000, limit: 1)
      assert [] = Query.events(since: now() + 60_000_000_000, limit: 1)
    end

    test "active processes at a time" do
      :ok = ElixirScope.trace(self())
      p1 = spawn(fn -> receive(do: (:stop -> :ok)) end)
      Process.sleep(2)
      t1 = now()
      p2 = spawn(fn -> receive(do: (:stop -> :ok)) end)
      Process.sleep(2)
      t2 = now()
      ref = Process.monitor(p1)
      send(p1, :stop)
      assert_receive {:DOWN, ^ref, _, _, _}
      wait_until(fn -> Query.process_exits() != [] end)
      me = self()
      assert Query.active_processes_at(t1) == Enum.sort([me, p1])
      assert Query.active_processes_at(t2) == Enum.sort([me, p1, p2])
      assert Query.active_processes_at(:now) == Enum.sort([me, p2])
      send(p2, :stop)
    end

    test "a traced process that did nothing yet is active" do
      idle = spawn(fn -> Process.sleep(:infinity) end)
      :ok = ElixirScope.trace(idle)
      assert idle in Query.active_processes_at(:now)
    end
  end

  describe "TraceDB: management" do
    test "a new capture starts empty (clear)" do
      start!()
      :ok = ElixirScope.trace(self())
      for i <- 1..10, do: send(self(), {:test, i})
      assert ElixirScope.status().events > 0
      ElixirScope.stop()
      start!()
      assert ElixirScope.status().events == 0
      assert Query.events() == []
    end

    test "a capture over max_events keeps max_events and counts the rest" do
      start!(max_events: 1_000)
      :ok = ElixirScope.trace(self())
      for i <- 1..2_000, do: send(self(), {:test, i})
      status = ElixirScope.status()
      assert status.events == 1_000 and status.dropped >= 1_000
    end

    test "persistence writes the trace to disk" do
      dir = temp_path("seed-persist")
      start!(persist: [dir: dir])
      :ok = ElixirScope.trace(self())
      for i <- 1..5, do: send(self(), {:test, i})
      {:ok, store} = ElixirScope.open_persisted()
      files = File.ls!(dir)
      assert Enum.any?(files, &(File.stat!(Path.join(dir, &1)).size > 0))

      assert 5 =
               Query.messages_from(self(), store: store)
               |> Enum.count(&match?({:test, _}, &1.data))
    end
  end

  describe "StateRecorder" do
    setup do: start!()

    test "tracks GenServer initialization" do
      :ok = ElixirScope.trace(SimpleGenServer)
      {:ok, server} = GenServer.start(SimpleGenServer, %{name: "test"})

      assert [%{mfa: {SimpleGenServer, :init, 1}, data: %{name: "test"}}] =
               Query.genserver_events(server, :init) |> Enum.filter(&(&1.kind == :state))
    end

    test "tracks handle_call, handle_cast and handle_info state changes" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{})
      :ok = ElixirScope.trace(server)
      GenServer.call(server, {:update, :count, 1})
      GenServer.cast(server, {:async_update, :count, 2})
      send(server, {:info_update, :count, 3})
      wait_until(fn -> Query.state_at(server, :now) == {:ok, %{count: 3}} end)

      for {callback, n} <- [handle_call: 1, handle_cast: 2, handle_info: 3] do
        events = Query.genserver_events(server, callback)
        assert [:call, :return, :state] = Enum.map(events, & &1.kind)
        assert %{count: ^n} = List.last(events).data
      end
    end

    test "traces an external GenServer" do
      {:ok, server} = GenServer.start_link(SimpleGenServer, %{count: 0})
      assert :ok = ElixirScope.trace_genserver(server)
      GenServer.call(server, {:update, :count, 1})
      assert [_ | _] = Query.events(kind: :state, pid: server)
      assert :ok = ElixirScope.untrace(server)
    end
  end

  describe "ProcessObserver" do
    setup do: start!()

    test "is running, and tracks process events" do
      assert %{running: true} = ElixirScope.status()
      :ok = ElixirScope.trace(self())
      child = spawn_link(fn -> :ok end)
      wait_until(fn -> Query.events(pid: child, kind: :exit) != [] end)
      assert [%{kind: :spawn, peer: ^child}] = Query.process_spawns()
      assert [%{kind: :link, peer: ^child}] = Query.events(kind: :link)
    end

    test "the supervision tree and its children" do
      {:ok, sup} =
        Supervisor.start_link([%{id: :w, start: {Agent, :start_link, [fn -> 0 end]}}],
          strategy: :one_for_one
        )

      :ok = ElixirScope.trace(sup)
      [{:w, worker, :worker, _}] = Supervisor.which_children(sup)

      assert [%{pid: ^sup, children: [%{id: :w, pid: ^worker, type: :worker}]}] =
               Query.supervision_tree_at(:now)

      Supervisor.stop(sup)
    end
  end

  describe "MessageInterceptor" do
    setup do: start!()

    test "tracing can be turned off and on, and levels set" do
      for level <- [:off, :minimal, :messages_only, :full] do
        :ok = ElixirScope.set_level(level)
        assert ElixirScope.status().tracing_level == level
      end
    end

    test "captures sent messages" do
      :ok = ElixirScope.trace(self())
      send(self(), "TEST_MESSAGE")
      assert_receive "TEST_MESSAGE"

      assert [%{kind: :send, data: "TEST_MESSAGE"}] =
               Enum.filter(Query.messages_from(self()), &is_binary(&1.data))

      # (The other message it received is the reply of the trace call.)
      assert [%{kind: :receive, data: "TEST_MESSAGE"}] =
               Enum.filter(Query.messages_to(self()), &is_binary(&1.data))
    end

    test "traces messages for a specific process" do
      parent = self()

      target =
        spawn_link(fn ->
          receive do
            {:test, msg} -> send(parent, {:received, msg})
          end
        end)

      :ok = ElixirScope.trace(target)
      send(target, {:test, "hello"})
      assert_receive {:received, "hello"}
      assert [%{data: {:test, "hello"}}] = Query.messages_to(target)
      assert [%{data: {:received, "hello"}}] = Query.message_flow(target, parent)
    end

    test "captures GenServer call messages" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{})
      :ok = ElixirScope.trace(server)
      GenServer.call(server, :get_state)

      assert [%{pid: ^server, data: {:"$gen_call", {_, _}, :get_state}}] =
               Query.messages_to(server)
    end
  end

  describe "QueryEngine" do
    setup do: start!()

    test "message_flow finds messages between processes, both ways" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{})
      :ok = ElixirScope.trace(server)
      :ok = ElixirScope.trace(self())
      GenServer.call(server, :get_state)
      assert [%{data: {:"$gen_call", _, :get_state}}] = ElixirScope.message_flow(self(), server)
      assert [%{data: {_, %{}}}] = ElixirScope.message_flow(server, self())
    end

    test "state_timeline, execution_path and the facade's seed names" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{})
      :ok = ElixirScope.trace(server)
      GenServer.call(server, {:update, :a, 1})
      assert [%{}, %{a: 1}] = Enum.map(ElixirScope.state_timeline(server), & &1.data)

      assert [:call, :return] = ElixirScope.execution_path(server) |> Enum.map(& &1.kind)
    end

    test "state_changes_in_window over every process, and execution_timeline with kinds" do
      {:ok, a} = GenServer.start(SimpleGenServer, %{})
      {:ok, b} = GenServer.start(SimpleGenServer, %{})
      :ok = ElixirScope.trace(a)
      :ok = ElixirScope.trace(b)
      t0 = now()
      GenServer.call(a, {:update, :x, 1})
      GenServer.call(b, {:update, :y, 2})
      t1 = now()
      GenServer.call(a, {:update, :x, 3})

      changes = Query.state_changes_in_window(t0, t1)
      assert [{^a, %{x: 1}}, {^b, %{y: 2}}] = Enum.map(changes, &{&1.event.pid, &1.event.data})

      assert [%StateDiff{added: [{[:x], 1}]}, %StateDiff{added: [{[:y], 2}]}] =
               Enum.map(changes, & &1.diff)

      states = Query.execution_timeline(t0, t1, [:state])
      assert [%{x: 1}, %{y: 2}] = Enum.map(states, & &1.data)
    end

    test "system_snapshot_at has the seed's keys" do
      {:ok, server} = GenServer.start(SimpleGenServer, %{n: 1})
      :ok = ElixirScope.trace(server)
      snap = Query.system_snapshot_at(:now)

      assert %{
               active_processes: active,
               process_states: %{^server => %{n: 1}},
               pending_messages: %{},
               supervision_tree: []
             } = snap

      assert server in active
    end

    test "compare_states detects differences between maps, with the seed's keys" do
      diff = Query.compare_states(%{a: 1, b: 2, c: 3}, %{a: 1, b: 5, d: 4})
      assert {[:b], 2, 5} in diff.changed
      assert {[:c], 3} in diff.removed
      assert {[:d], 4} in diff.added
      assert %{equal: false, before: %{c: 3}, after: %{d: 4}} = diff
      assert %{equal: true} = Query.compare_states(:same, :same)
    end
  end
end
