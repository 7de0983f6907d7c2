defmodule ElixirScope.HistoryTest do
  # Time travel on real processes, each against a private store, with answers known exactly.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Crash, Query, StateDiff, Store, Tracer}

  doctest ElixirScope.Query.History
  doctest ElixirScope.StateDiff
  doctest ElixirScope.Supervision
  doctest ElixirScope.Crash

  defmodule Counter do
    use GenServer
    def init(n), do: {:ok, %{count: n, log: []}}
    def handle_call(:get, _from, s), do: {:reply, s.count, s}

    def handle_call({:add, k}, _from, s),
      do: {:reply, :ok, %{s | count: s.count + k, log: [k | s.log]}}

    def handle_cast({:add, k}, s), do: {:noreply, %{s | count: s.count + k, log: [k | s.log]}}

    def handle_cast({:block, test}, s),
      do: send(test, :blocked) && receive(do: (:release -> {:noreply, s}))

    def handle_cast(:crash, _s), do: raise(ArgumentError, "counter crashed")
    def handle_info(:noop, s), do: {:noreply, s}
  end

  defmodule Crasher do
    use GenServer
    def init(n), do: {:ok, %{count: n, log: []}}

    def handle_call({:add, k}, _from, s),
      do: {:reply, :ok, %{s | count: s.count + k, log: [k | s.log]}}

    def handle_cast(:crash, _s), do: raise(ArgumentError, "counter crashed")
  end

  alias ScopeTest.Door

  defmodule Nested do
    def outer(test), do: middle(test) + 1
    def middle(test), do: inner(test) * 2

    def inner(test) do
      send(test, {:inside, self()})
      receive do: (:continue -> 1)
    end
  end

  defp counter(store, n \\ 0) do
    {:ok, pid} = GenServer.start(Counter, n)
    trace_states_into(pid, store)
    pid
  end

  test "a counter's states: the snapshot, then one per callback, unchanged ones shared" do
    store = new_store()
    pid = counter(store, 5)
    t0 = now()
    :ok = GenServer.call(pid, {:add, 1})
    t1 = now()
    GenServer.cast(pid, {:add, 2})
    8 = GenServer.call(pid, :get)
    send(pid, :noop)
    8 = GenServer.call(pid, :get)

    counts = fn evs -> Enum.map(evs, & &1.data.count) end
    assert counts.(Query.state_timeline(pid, store: store)) == [5, 6, 8]
    # Every callback left a state; the unchanged ones (:get, :noop, :get) share their payload.
    assert counts.(Query.state_timeline(pid, store: store, changes_only: false)) == [
             5,
             6,
             8,
             8,
             8,
             8
           ]

    assert {:ok, %{count: 5}} = Query.state_at(pid, t0, store: store)
    assert {:ok, %{count: 6, log: [1]}} = Query.state_at(pid, t1, store: store)
    assert {:ok, %{count: 8, log: [2, 1]}} = Query.get_state_at(pid, :now, store: store)

    [snapshot, first | _] = Query.state_timeline(pid, store: store)
    assert snapshot.mfa == {:sys, :get_state, 2}
    assert first.mfa == {Counter, :handle_call, 3}
    assert Query.state_at(pid, {:seq, first.seq - 1}, store: store) == {:ok, snapshot.data}
    assert Query.state_at(pid, first, store: store) == {:ok, first.data}

    assert counts.(Query.state_evolution(pid, t1, :now, store: store)) == [6, 8]
    # The call that produced a state, with the message among its arguments.
    assert %{kind: :call, data: [{:add, 1}, _from, %{count: 5}]} =
             Query.state_cause(first, store: store)

    assert Query.state_cause(snapshot, store: store) == nil

    # Lists compare by index: [1] -> [2, 1] changes index 0 and adds index 1.
    assert [
             %{
               diff: %StateDiff{
                 changed: [{[:count], 6, 8}, {[:log, 0], 1, 2}],
                 added: [{[:log, 1], 1}]
               }
             }
           ] = Query.state_changes_in_window(pid, {t1, :now}, store: store)

    assert %StateDiff{changed: [{[:count], 5, 6}]} =
             Query.compare_states(snapshot, first) |> Map.put(:added, [])
  end

  test "a diff of deep states stops at 64 levels and reports the rest whole" do
    # Every level changes: with a full path per level this was quadratic (20k levels: minutes).
    nest = fn n, x -> Enum.reduce(1..n, :leaf, fn _, inner -> {x, inner} end) end
    old = nest.(20_000, 0)
    new = nest.(20_000, 1)
    diff = StateDiff.diff(old, new)
    assert length(diff.changed) == 65
    # One change per level down to 64, paths [0], [1, 0], [1, 1, 0], ...
    for {{path, 0, 1}, level} <- Enum.zip(Enum.take(diff.changed, 64), 1..64) do
      assert path == List.duplicate(1, level - 1) ++ [0]
    end

    # Below: the subterm at depth 64, whole.
    {deep_path, deep_old, deep_new} = List.last(diff.changed)
    assert deep_path == List.duplicate(1, 64)
    assert deep_old == nest.(20_000 - 64, 0) and deep_new == nest.(20_000 - 64, 1)

    # Maps count levels the same way; shallow diffs are exact as before.
    deep_map = fn n, x -> Enum.reduce(1..n, x, fn _, inner -> %{k: inner} end) end

    assert StateDiff.diff(deep_map.(100, 1), deep_map.(100, 2)).changed ==
             [{List.duplicate(:k, 64), deep_map.(36, 1), deep_map.(36, 2)}]

    assert StateDiff.diff(deep_map.(64, 1), deep_map.(64, 2)).changed ==
             [{List.duplicate(:k, 64), 1, 2}]
  end

  test "pending messages at T equal Process.info(pid, :messages) sampled at T" do
    store = new_store()
    pid = counter(store)
    GenServer.cast(pid, {:block, self()})
    assert_receive :blocked
    # The server is stuck in a callback: the mailbox fills.
    for k <- 1..5, do: GenServer.cast(pid, {:add, k})
    send(pid, :noop)
    wait_until(fn -> length(elem(Process.info(pid, :messages), 1)) == 6 end)
    {:messages, sampled} = Process.info(pid, :messages)
    t = now()
    send(pid, :release)
    wait_until(fn -> Process.info(pid, :message_queue_len) == {:message_queue_len, 0} end)
    15 = GenServer.call(pid, :get)

    assert {:ok, pending} = Query.pending_messages_at(pid, t, store: store)
    assert Enum.map(pending, & &1.data) == sampled
    # After the call, everything was consumed.
    assert {:ok, []} = Query.pending_messages_at(pid, :now, store: store)
    # Half way, after three casts were handled: :release, which the blocked callback took with a
    # selective receive, is only known to be consumed once the server takes a message that
    # arrived after it (the :get call).
    [_, _, third | _] =
      Query.function_calls(Counter, :handle_cast, store: store, pid: pid) |> Enum.drop(1)

    assert {:ok, rest} = Query.pending_messages_at(pid, third, store: store)
    assert Enum.map(rest, & &1.data) == Enum.drop(sampled, 3) ++ [:release]
  end

  test "a :gen_statem's states are {state, data}, and its mailbox is known exactly" do
    store = new_store()
    {:ok, pid} = :gen_statem.start(Door, 42, [])
    trace_states_into(pid, store)
    :error = :gen_statem.call(pid, {:unlock, 1})
    :ok = :gen_statem.call(pid, {:unlock, 42})
    :open = :gen_statem.call(pid, :peek)
    :ok = :gen_statem.call(pid, :lock)

    assert Enum.map(Query.state_timeline(pid, store: store, changes_only: false), & &1.data) == [
             {:locked, %{code: 42, tries: 0}},
             {:locked, %{code: 42, tries: 1}},
             {:open, %{code: 42, tries: 0}},
             {:open, %{code: 42, tries: 0}},
             {:locked, %{code: 42, tries: 0}}
           ]

    # Block it in a state function and fill its mailbox.
    :gen_statem.cast(pid, {:wait, self()})
    assert_receive :waiting
    send(pid, :noop)
    :gen_statem.cast(pid, {:wait, self()})
    wait_until(fn -> match?({:message_queue_len, 2}, Process.info(pid, :message_queue_len)) end)
    {:messages, sampled} = Process.info(pid, :messages)
    t = now()
    send(pid, :go_on)
    assert_receive :waiting
    send(pid, :go_on)
    :ok = :gen_statem.call(pid, {:unlock, 42})
    assert {:ok, pending} = Query.pending_messages_at(pid, t, store: store)
    assert Enum.map(pending, & &1.data) == sampled
    assert {:ok, []} = Query.pending_messages_at(pid, :now, store: store)
  end

  test "a plain process's consumption is unknown, and said so" do
    store = new_store()
    pid = spawn(fn -> receive do: (:stop -> :ok) end)
    trace_into(pid, store)
    send(pid, :a)
    send(pid, :b)
    wait_until(fn -> length(events(store, kind: :receive)) == 2 end)

    assert {:unknown, [%{data: :a}, %{data: :b}]} =
             Query.pending_messages_at(pid, :now, store: store)

    send(pid, :stop)
  end

  test "call_stack_at shows the traced calls open at T, outermost first" do
    {:ok, _} = Tracer.trace_module(Nested, true)
    on_exit(fn -> Tracer.untrace_module(Nested) end)
    store = new_store()
    test_pid = self()
    pid = spawn_waiting(fn -> send(test_pid, {:result, Nested.outer(test_pid)}) end)
    trace_into(pid, store)
    send(pid, :go)
    assert_receive {:inside, ^pid}
    t = now()
    send(pid, :continue)
    assert_receive {:result, 3}

    assert Enum.map(Query.call_stack_at(pid, t, store: store), & &1.mfa) ==
             [{Nested, :outer, 1}, {Nested, :middle, 1}, {Nested, :inner, 1}]

    assert Query.call_stack_at(pid, :now, store: store) == []
    assert length(Query.execution_path(pid, store: store)) == 6
  end

  test "supervision tree at T before and after a restart equals which_children then" do
    store = new_store()

    children = [
      %{id: :counter, start: {GenServer, :start_link, [Counter, 0]}},
      %{id: :agent, start: {Agent, :start_link, [fn -> :x end]}}
    ]

    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
    trace_states_into(sup, store)
    t1 = now()
    before = Supervisor.which_children(sup)
    [{:counter, old, :worker, _}] = Enum.filter(before, &(elem(&1, 0) == :counter))
    ref = Process.monitor(old)
    GenServer.cast(old, :crash)
    assert_receive {:DOWN, ^ref, _, _, _}, 5_000

    wait_until(fn ->
      match?(
        {:counter, p, _, _} when is_pid(p) and p != old,
        List.keyfind(Supervisor.which_children(sup), :counter, 0)
      )
    end)

    t2 = now()
    after_restart = Supervisor.which_children(sup)

    as_tuples = fn [root] -> Enum.map(root.children, &{&1.id, &1.pid, &1.type, &1.modules}) end
    assert as_tuples.(Query.supervision_tree_at(t1, store: store)) == before
    assert as_tuples.(Query.supervision_tree_at(t2, store: store)) == after_restart
    refute before == after_restart
    assert [%{pid: ^sup}] = Query.supervision_tree_at(:now, store: store)

    {_, new, _, _} = List.keyfind(after_restart, :counter, 0)

    assert [%{kind: :supervisor, pid: ^sup, peer: ^new, data: data} = event] =
             Query.supervisor_events(sup, store: store)

    assert data == %{action: :restarted, id: :counter, old_pid: old, pid: new, reason: nil}
    assert inspect(event) =~ "restarted :counter"

    # A window holds the changes its states show, against the state before it; any time form.
    for since <- [{:seq, 0}, {:seq, 1}, {:seq, event.seq}, t1],
        until <- [nil, {:seq, event.seq}, t2, :now] do
      assert [^event] = Query.supervisor_events(sup, store: store, since: since, until: until),
             inspect({since, until})
    end

    assert [] = Query.supervisor_events(sup, store: store, until: {:seq, event.seq - 1})
    assert [] = Query.supervisor_events(sup, store: store, since: {:seq, event.seq + 1})

    Supervisor.stop(sup)
  end

  test "a DynamicSupervisor's tree follows its children" do
    store = new_store()
    {:ok, sup} = DynamicSupervisor.start_link(strategy: :one_for_one)
    trace_states_into(sup, store)
    assert Tracer.state_module(sup) == DynamicSupervisor
    t0 = now()
    {:ok, a} = DynamicSupervisor.start_child(sup, {Agent, fn -> 1 end})
    {:ok, b} = DynamicSupervisor.start_child(sup, {Agent, fn -> 2 end})
    t1 = now()
    :ok = DynamicSupervisor.terminate_child(sup, a)

    pids = fn t ->
      [root] = Query.supervision_tree_at(t, store: store)
      Enum.map(root.children, & &1.pid)
    end

    assert pids.(t0) == []
    assert pids.(t1) == Enum.sort([a, b])
    assert pids.(:now) == [b]

    assert [%{action: :started}, %{action: :started}, %{action: :terminated, old_pid: ^a}] =
             Enum.map(Query.supervisor_events(sup, store: store), & &1.data)

    Supervisor.stop(sup)
  end

  test "why_crashed explains a crash: reason, exception, last messages, state, links" do
    store = new_store()
    # Every function of the crashing module traced (its own module: patterns are VM-wide).
    {:ok, _} = Tracer.trace_module(Crasher, false)
    on_exit(fn -> Tracer.untrace_module(Crasher) end)
    {:ok, pid} = GenServer.start(Crasher, 1)
    trace_states_into(pid, store)
    buddy = spawn_waiting(fn -> Process.link(pid) && receive(do: (:never -> :ok)) end)
    trace_into(buddy, store)
    send(buddy, :go)
    wait_until(fn -> {:links, [pid]} == Process.info(buddy, :links) end)
    :ok = GenServer.call(pid, {:add, 41})
    ref = Process.monitor(pid)
    GenServer.cast(pid, :crash)
    assert_receive {:DOWN, ^ref, _, _, _}, 5_000
    wait_until(fn -> not Process.alive?(buddy) end)

    assert {:ok, %Crash{} = crash} = Query.why_crashed(pid, store: store)
    assert %ArgumentError{message: "counter crashed"} = crash.exception
    assert [{Crasher, :handle_cast, 2, _} | _] = crash.stacktrace
    assert crash.state == %{count: 42, log: [41]}
    # The messages before the failure, not the replies the dying process gets while reporting.
    assert List.last(crash.last_messages).data == {:"$gen_cast", :crash}
    assert [%{kind: :exception, mfa: {Crasher, :handle_cast, 2}} | _] = crash.raised
    assert [%{pid: ^buddy, exit: {%ArgumentError{}, _}}] = crash.linked
    text = Crash.format(crash)
    assert text =~ "counter crashed"
    assert text =~ "count: 42"
    assert {:error, :no_exit} = Query.why_crashed(self(), store: store)
  end

  test "active processes and the system snapshot at T" do
    store = new_store()
    pid = counter(store, 3)
    test_pid = self()

    other =
      spawn(fn -> receive do: (:go -> send(test_pid, :going) && receive(do: (:stop -> :ok))) end)

    trace_into(other, store)
    t_before = now()
    send(other, :go)
    assert_receive :going
    t = now()
    ref = Process.monitor(other)
    send(other, :stop)
    assert_receive {:DOWN, ^ref, _, _, _}
    # `other` did nothing traced before t_before; it had by t; it exited after.
    assert Query.active_processes_at(t_before, store: store) == [pid]
    assert Query.active_processes_at(t, store: store) == Enum.sort([pid, other])
    snap = Query.system_snapshot_at(t, store: store)
    assert %{state: %{count: 3}, pending: {:unknown, []}, calls: []} = snap.processes[pid]
    assert snap.active_processes == Enum.sort([pid, other])
    assert snap.process_states == %{pid => %{count: 3, log: []}}
    assert snap.pending_messages == %{}
    assert snap.supervision_tree == []
    assert snap.timestamp == t
    assert Query.states_at(t, store: store) == %{pid => %{count: 3, log: []}, other => :unknown}
    assert Query.active_processes_at(:now, store: store) == [pid]
    assert [%{kind: :exit, pid: ^other}] = Query.process_exits(store: store)
  end

  defmodule Big do
    use GenServer
    def init(n), do: {:ok, %{items: Enum.to_list(1..n)}}
    def handle_call({:push, x}, _from, s), do: {:reply, :ok, %{s | items: [x | s.items]}}
    def handle_call(:throw, _from, s), do: throw({:reply, :thrown, %{s | items: [:thrown]}})

    def handle_cast({:block, test}, s),
      do: send(test, :blocked) && receive(do: (:release -> {:noreply, s}))
  end

  test "states over the payload cap are kept whole, and their servers' mailboxes still resolve" do
    store = new_store(max_payload_bytes: 64)
    {:ok, pid} = GenServer.start(Big, 2_000)
    trace_states_into(pid, store)
    :ok = GenServer.call(pid, {:push, 0})
    assert {:ok, %{items: [0, 1 | _]}} = Query.state_at(pid, :now, store: store)
    GenServer.cast(pid, {:block, self()})
    assert_receive :blocked
    GenServer.cast(pid, {:block, self()})
    # Asking for the mailbox makes the process take in (and trace) what was sent to it.
    assert {:messages, [{:"$gen_cast", {:block, _}}]} = Process.info(pid, :messages)
    t = now()
    send(pid, :release)
    assert_receive :blocked
    send(pid, :release)
    :ok = GenServer.call(pid, {:push, 1})
    # handle_call's arguments (with the state) are truncated to 64 bytes, yet the request they
    # start with still matches.
    assert {:ok, [%{data: {:"$gen_cast", {:block, _}}}]} =
             Query.pending_messages_at(pid, t, store: store)

    assert {:ok, []} = Query.pending_messages_at(pid, :now, store: store)
  end

  test "a value thrown by a callback is its result, at every level that keeps states" do
    for level <- [:full, :states_only] do
      store = new_store(tracing_level: level)
      {:ok, pid} = GenServer.start(Big, 1)
      trace_states_into(pid, store)
      :ok = GenServer.call(pid, {:push, 0})
      assert Query.state_at(pid, :now, store: store) == {:ok, %{items: [0, 1]}}, "#{level}"
      assert GenServer.call(pid, :throw) == :thrown
      assert Query.state_at(pid, :now, store: store) == {:ok, %{items: [:thrown]}}, "#{level}"
    end
  end

  test "out-of-range times, unknown pids and empty stores give clear answers" do
    empty = new_store()
    ghost = spawn(fn -> :ok end)
    assert Query.state_at(ghost, :now, store: empty) == {:error, :no_state}
    assert Query.state_at(ghost, 0, store: empty) == {:error, :no_state}
    assert Query.state_timeline(ghost, store: empty) == []
    assert Query.pending_messages_at(ghost, {:seq, 10_000}, store: empty) == {:unknown, []}
    assert Query.call_stack_at(ghost, DateTime.utc_now(), store: empty) == []
    assert Query.active_processes_at(:now, store: empty) == []
    assert Query.supervision_tree_at(:now, store: empty) == []
    assert %{active_processes: [], processes: %{}} = Query.system_snapshot_at(:now, store: empty)
    assert {:error, :no_exit} = Query.why_crashed(ghost, store: empty)

    store = new_store()
    pid = counter(store)
    # Before anything was recorded.
    assert Query.state_at(pid, {:seq, 0}, store: store) == {:error, :no_state}
    assert Query.state_at(pid, -(2 ** 62), store: store) == {:error, :no_state}

    assert_raise ArgumentError, ~r/invalid time "yesterday"/, fn ->
      Query.state_at(pid, "yesterday", store: store)
    end

    assert_raise ArgumentError,
                 ~r/invalid pid :me: no process is registered under that name/,
                 fn ->
                   Query.state_at(:me, :now, store: store)
                 end

    assert_raise ArgumentError, ~r/expected a pid, a registered name/, fn ->
      Query.state_at("me", :now, store: store)
    end
  end

  test "a chatty server with a big unchanged state costs a slot per callback, not a copy" do
    store = new_store()
    {:ok, pid} = GenServer.start(Counter, 0)
    :sys.replace_state(pid, fn s -> %{s | log: Enum.to_list(1..500)} end)
    trace_states_into(pid, store)
    before = Store.stats(store).payload_bytes
    for _ <- 1..200, do: GenServer.call(pid, :get)
    grown = Store.stats(store).payload_bytes - before
    # Each call stores a request, the callback's args and result and a reply (each holding the
    # 2 KB state in the args and the {:reply, _, state} result), but the 200 unchanged states
    # themselves add nothing.
    states = Query.state_timeline(pid, store: store, changes_only: false)
    assert length(states) == 201
    assert length(Query.state_timeline(pid, store: store)) == 1
    # Per call, the request, handle_call's arguments and result (both holding the state) and
    # the reply are stored; a fourth copy of the state, the state event, is not.
    state_size = byte_size(:erlang.term_to_binary(:sys.get_state(pid)))
    assert div(grown, 200) < 2 * state_size + 300
  end
end
