defmodule ElixirScope.ArgumentsTest do
  # Every public function given a wrong argument returns a value or `{:error, reason}`, or raises
  # an ArgumentError that names the argument; never a FunctionClauseError, a CaseClauseError, a
  # KeyError or a NIF's bare "argument error". Times and seqs beyond 64 bits and DateTimes out
  # of the clock's range are valid requests, with exact answers. Each case runs against a
  # private store holding a traced Agent's events.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Crash, Event, Query, Replay, Store}
  alias ElixirScope.Query.{Aggregate, DSL, History, Vars}

  @big 2 ** 70
  @past ~U[0001-01-01 00:00:00Z]
  @future ~U[9999-12-31 23:59:59Z]

  setup do
    store = new_store()
    {:ok, agent} = Agent.start(fn -> %{a: 1} end)
    trace_states_into(agent, store)
    :ok = Agent.update(agent, &Map.put(&1, :b, 2))
    :ok = Agent.update(agent, &Map.put(&1, :a, 3))
    wait_until(fn -> length(Query.state_timeline(agent, store: store)) == 3 end)
    on_exit(fn -> Process.exit(agent, :kill) end)

    all = Query.events(store: store)
    state = List.last(Query.state_timeline(agent, store: store))
    {:ok, cursor} = Replay.open(:start, store: store)
    %{store: store, pid: agent, all: all, state: state, cursor: cursor}
  end

  # {name, what must happen, fn context -> call end}: `:returns` (a value or an error tuple),
  # `{:raises, text}` (an ArgumentError whose message has `text`: the argument's name, or for
  # options that are not a keyword list, "keyword list of options").
  cases = [
    # Times, seqs and limits beyond 64 bits, DateTimes beyond the clock: clamped.
    {"events since: 2**70", :returns,
     quote(do: fn c -> Query.events(store: c.store, since: @big) end)},
    {"events until: -2**70", :returns,
     quote(do: fn c -> Query.events(store: c.store, until: -@big) end)},
    {"events since: year 1", :returns,
     quote(do: fn c -> Query.events(store: c.store, since: @past) end)},
    {"events until: year 9999", :returns,
     quote(do: fn c -> Query.events(store: c.store, until: @future) end)},
    {"events after_seq: 2**70", :returns,
     quote(do: fn c -> Query.events(store: c.store, after_seq: @big) end)},
    {"events before_seq: 2**70", :returns,
     quote(do: fn c -> Query.events(store: c.store, before_seq: @big) end)},
    {"events limit: 2**70", :returns,
     quote(do: fn c -> Query.events(store: c.store, limit: @big) end)},
    {"events any: [[since: 2**70]]", :returns,
     quote(do: fn c -> Query.events(store: c.store, any: [[since: @big]]) end)},
    {"events not: [until: year 9999]", :returns,
     quote(do: fn c -> Query.events(store: c.store, not: [until: @future]) end)},
    {"count until: 2**70", :returns,
     quote(do: fn c -> Query.count(store: c.store, until: @big) end)},
    {"events_around_event 2**70", :returns,
     quote(do: fn c -> Query.events_around_event(@big, 1, store: c.store) end)},
    {"events_around_event n 2**70", :returns,
     quote(do: fn c -> Query.events_around_event(1, @big, store: c.store) end)},
    {"execution_timeline to 2**70", :returns,
     quote(do: fn c -> Query.execution_timeline({:seq, 0}, @big, store: c.store) end)},
    {"execution_timeline from year 1", :returns,
     quote(do: fn c -> Query.execution_timeline(@past, :now, store: c.store) end)},
    {"state_at 2**70", :returns,
     quote(do: fn c -> Query.state_at(c.pid, @big, store: c.store) end)},
    {"state_at -2**70", :returns,
     quote(do: fn c -> Query.state_at(c.pid, -@big, store: c.store) end)},
    {"state_at {:seq, 2**70}", :returns,
     quote(do: fn c -> Query.state_at(c.pid, {:seq, @big}, store: c.store) end)},
    {"state_at year 9999", :returns,
     quote(do: fn c -> Query.state_at(c.pid, @future, store: c.store) end)},
    {"state_at year 1", :returns,
     quote(do: fn c -> Query.state_at(c.pid, @past, store: c.store) end)},
    {"state_timeline until: 2**70", :returns,
     quote(do: fn c -> Query.state_timeline(c.pid, store: c.store, until: @big) end)},
    {"state_evolution to year 9999", :returns,
     quote(do: fn c -> Query.state_evolution(c.pid, {:seq, 0}, @future, store: c.store) end)},
    {"pending_messages_at year 9999", :returns,
     quote(do: fn c -> Query.pending_messages_at(c.pid, @future, store: c.store) end)},
    {"call_stack_at 2**70", :returns,
     quote(do: fn c -> Query.call_stack_at(c.pid, @big, store: c.store) end)},
    {"active_processes_at -2**70", :returns,
     quote(do: fn c -> Query.active_processes_at(-@big, store: c.store) end)},
    {"states_at {:seq, 2**70}", :returns,
     quote(do: fn c -> Query.states_at({:seq, @big}, store: c.store) end)},
    {"system_snapshot_at year 1", :returns,
     quote(do: fn c -> Query.system_snapshot_at(@past, store: c.store) end)},
    {"supervision_tree_at 2**70", :returns,
     quote(do: fn c -> Query.supervision_tree_at(@big, store: c.store) end)},
    {"Replay.open at 2**70", :returns, quote(do: fn c -> Replay.open(@big, store: c.store) end)},
    {"Replay.jump to year 1", :returns, quote(do: fn c -> Replay.jump(c.cursor, @past) end)},
    {"Replay.jump to {:seq, 2**70}", :returns,
     quote(do: fn c -> Replay.jump(c.cursor, {:seq, @big}) end)},
    {"DSL.literal of a struct", :returns, quote(do: fn _ -> DSL.literal(@future) end)},
    {"Crash.format of a bare crash", :returns, quote(do: fn _ -> Crash.format(%Crash{}) end)},

    # Options that are not a keyword list.
    {"count :bad", {:raises, "keyword list of options"},
     quote(do: fn _ -> Query.count(:bad) end)},
    {"group_by :bad", {:raises, "keyword list of options"},
     quote(do: fn _ -> Query.group_by(:bad, :pid) end)},
    {"rate :bad", {:raises, "keyword list of options"},
     quote(do: fn _ -> Query.rate(:bad, 1000) end)},
    {"durations :bad", {:raises, "keyword list of options"},
     quote(do: fn _ -> Aggregate.durations(:bad) end)},
    {"find :bad", {:raises, "keyword list of options"}, quote(do: fn _ -> Query.find(:bad) end)},
    {"find [1]", {:raises, "keyword list of options"}, quote(do: fn _ -> Query.find([1]) end)},
    {"timeline opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Query.timeline(c.pid, :bad) end)},
    {"execution_timeline opts", {:raises, "keyword list of options"},
     quote(do: fn _ -> Query.execution_timeline(0, :now, "x") end)},
    {"state_at opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Query.state_at(c.pid, :now, :bad) end)},
    {"state_timeline opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Query.state_timeline(c.pid, 5) end)},
    {"key_changes opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Query.key_changes(c.pid, :a, :bad) end)},
    {"supervisor_events opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Query.supervisor_events(c.pid, [1]) end)},
    {"why_crashed opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Query.why_crashed(c.pid, :bad) end)},
    {"variables opts", {:raises, "keyword list of options"},
     quote(do: fn _ -> Query.variables(Agent, :bad) end)},
    {"Replay.open opts", {:raises, "keyword list of options"},
     quote(do: fn _ -> Replay.open(:start, :bad) end)},
    {"Replay.step_until opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Replay.step_until(c.cursor, :bad) end)},
    {"Event.describe opts", {:raises, "keyword list of options"},
     quote(do: fn c -> Event.describe(c.state, :bad) end)},

    # Positional arguments of the wrong type.
    {"top n 0", {:raises, "invalid n 0, expected a positive integer"},
     quote(do: fn c -> Query.top([store: c.store], :pid, 0) end)},
    {"top n :all", {:raises, "invalid n :all"},
     quote(do: fn c -> Query.top([store: c.store], :pid, :all) end)},
    {"timeline pid", {:raises, "invalid pid :me"},
     quote(do: fn c -> Query.timeline(:me, store: c.store) end)},
    {"messages_from pid", {:raises, "invalid pid \"x\""},
     quote(do: fn c -> Query.messages_from("x", store: c.store) end)},
    {"messages_to pid", {:raises, "invalid pid nil"},
     quote(do: fn c -> Query.messages_to(nil, store: c.store) end)},
    {"message_flow to", {:raises, "invalid to :x"},
     quote(do: fn c -> Query.message_flow(c.pid, :x, store: c.store) end)},
    {"function_calls module", {:raises, "invalid module \"Agent\""},
     quote(do: fn c -> Query.function_calls("Agent", :get, store: c.store) end)},
    {"function_calls function", {:raises, "invalid function \"get\""},
     quote(do: fn c -> Query.function_calls(Agent, "get", store: c.store) end)},
    {"function_calls arity", {:raises, "invalid :arity 300"},
     quote(do: fn c -> Query.function_calls(Agent, :get, arity: 300, store: c.store) end)},
    {"module_function_calls module", {:raises, "invalid module 1"},
     quote(do: fn c -> Query.module_function_calls(1, store: c.store) end)},
    {"process_events pid", {:raises, "invalid pid :x"},
     quote(do: fn c -> Query.process_events(:x, store: c.store) end)},
    {"genserver_events pid", {:raises, "invalid pid []"},
     quote(do: fn c -> Query.genserver_events([], store: c.store) end)},
    {"execution_path pid", {:raises, "invalid pid 1.5"},
     quote(do: fn c -> Query.execution_path(1.5, store: c.store) end)},
    {"events_around_event event", {:raises, "invalid event :x"},
     quote(do: fn c -> Query.events_around_event(:x, 1, store: c.store) end)},
    {"events_around_event n", {:raises, "invalid n -1"},
     quote(do: fn c -> Query.events_around_event(1, -1, store: c.store) end)},
    {"state_timeline changes_only", {:raises, "invalid :changes_only :maybe"},
     quote(do: fn c -> Query.state_timeline(c.pid, store: c.store, changes_only: :maybe) end)},
    {"state_changes_in_window window", {:raises, "invalid window :today"},
     quote(do: fn c -> Query.state_changes_in_window(c.pid, :today, store: c.store) end)},
    {"key_changes integer key", {:raises, "invalid key 1, expected an atom"},
     quote(do: fn c -> Query.key_changes(c.pid, 1, store: c.store) end)},
    {"state_cause of a send", {:raises, "invalid state_event"},
     quote(do: fn c -> Query.state_cause(%Event{seq: 1, ts: 0, kind: :send}, store: c.store) end)},
    {"why_crashed last", {:raises, "invalid :last -1"},
     quote(do: fn c -> Query.why_crashed(c.pid, store: c.store, last: -1) end)},
    {"variables call: \"str\"", {:raises, "invalid :call \"str\""},
     quote(do: fn c -> Query.variables({Agent, :get, 2}, call: "str", store: c.store) end)},
    {"variables call: -1", {:raises, "invalid :call -1"},
     quote(do: fn c -> Query.variables(Agent, call: -1, store: c.store) end)},
    {"variables of a send event", {:raises, "invalid target"},
     quote(do: fn c -> Query.variables(%Event{seq: 1, ts: 0, kind: :send}, store: c.store) end)},
    {"source_view call", {:raises, "invalid :call :middle"},
     quote(do: fn c -> Query.source_view(Agent, call: :middle, store: c.store) end)},
    {"var_history var", {:raises, "invalid var \"x\""},
     quote(do: fn c -> Query.var_history(Agent, "x", store: c.store) end)},
    {"tracked_calls target", {:raises, "invalid target \"Agent\""},
     quote(do: fn c -> Query.tracked_calls("Agent", store: c.store) end)},
    {"Vars.calls target", {:raises, "invalid target {1, 2}"},
     quote(do: fn c -> Vars.calls({1, 2}, store: c.store) end)},
    {"find message improper list", {:raises, "invalid query pattern"},
     quote(do: fn c -> Query.find(store: c.store, message: [1 | 2]) end)},
    {"History.state_event_at opts", {:raises, "keyword list of options"},
     quote(do: fn c -> History.state_event_at(c.pid, :now, nil) end)},
    {"Replay.next", {:raises, "invalid cursor :x"}, quote(do: fn _ -> Replay.next(:x) end)},
    {"Replay.prev", {:raises, "invalid cursor nil"}, quote(do: fn _ -> Replay.prev(nil) end)},
    {"Replay.event", {:raises, "invalid cursor 1"}, quote(do: fn _ -> Replay.event(1) end)},
    {"Replay.view", {:raises, "invalid cursor %{}"}, quote(do: fn _ -> Replay.view(%{}) end)},
    {"Replay.format", {:raises, "invalid cursor \"x\""},
     quote(do: fn _ -> Replay.format("x") end)},
    {"Replay.jump", {:raises, "invalid cursor :x"}, quote(do: fn _ -> Replay.jump(:x, :now) end)},
    {"Replay.step_until mfa", {:raises, "invalid :mfa \"x\""},
     quote(do: fn c -> Replay.step_until(c.cursor, mfa: "x") end)},
    {"Replay.step_until data", {:raises, "invalid :data :x"},
     quote(do: fn c -> Replay.step_until(c.cursor, data: :x) end)},
    {"Crash.format", {:raises, "invalid crash :x"}, quote(do: fn _ -> Crash.format(:x) end)},
    {"Event.datetime event", {:raises, "invalid event :x"},
     quote(do: fn _ -> Event.datetime(:x) end)},
    {"Event.datetime store", {:raises, "invalid store :nope"},
     quote(do: fn c -> Event.datetime(c.state, :nope) end)},
    {"Event.describe event", {:raises, "invalid event nil"},
     quote(do: fn _ -> Event.describe(nil) end)},
    {"Store.stats", {:raises, "invalid store :x"}, quote(do: fn _ -> Store.stats(:x) end)},
    {"Store.close", {:raises, "invalid store nil"}, quote(do: fn _ -> Store.close(nil) end)},
    {"Store.set_level", {:raises, "invalid store :x"},
     quote(do: fn _ -> Store.set_level(:x, :full) end)},
    {"Store.set_sampling", {:raises, "invalid store :x"},
     quote(do: fn _ -> Store.set_sampling(:x, 1.0) end)},
    {"Store.to_datetime ts", {:raises, "invalid ts \"x\""},
     quote(do: fn c -> Store.to_datetime(c.store, "x") end)},
    {"Store.to_datetime ts 2**70", {:raises, "invalid ts #{2 ** 70}"},
     quote(do: fn c -> Store.to_datetime(c.store, @big) end)},
    {"Store.to_datetime store", {:raises, "invalid store 1"},
     quote(do: fn _ -> Store.to_datetime(1, 0) end)},
    {"Store.from_datetime datetime", {:raises, "invalid datetime ~N[2020-01-01 00:00:00]"},
     quote(do: fn c -> Store.from_datetime(c.store, ~N[2020-01-01 00:00:00]) end)},
    {"ElixirScope.save path", {:raises, "invalid path :x"},
     quote(do: fn c -> ElixirScope.save(:x, store: c.store) end)},
    {"ElixirScope.save non-UTF-8 path", {:raises, "invalid path <<255>>"},
     quote(do: fn c -> ElixirScope.save(<<255>>, store: c.store) end)},
    {"ElixirScope.open path", {:raises, "invalid path 1"},
     quote(do: fn _ -> ElixirScope.open(1) end)},
    {"ElixirScope.open non-UTF-8 path", {:raises, "invalid path <<255>>"},
     quote(do: fn _ -> ElixirScope.open(<<255>>) end)},
    {"ElixirScope.open default", {:raises, "invalid :default :yes"},
     quote(do: fn _ -> ElixirScope.open("/nonexistent-escope", default: :yes) end)},
    {"ElixirScope.open progress", {:raises, "invalid :progress :x"},
     quote(do: fn _ -> ElixirScope.open("/nonexistent-escope", progress: :x) end)},
    {"ElixirScope.trace_module module", {:raises, "invalid module \"Agent\""},
     quote(do: fn _ -> ElixirScope.trace_module("Agent") end)},
    {"ElixirScope.trace_genserver server", {:raises, "invalid server 1"},
     quote(do: fn _ -> ElixirScope.trace_genserver(1) end)}
  ]

  for {name, expect, fun} <- cases do
    test "#{name}: #{inspect(expect)}", context do
      check(unquote(fun), context, unquote(Macro.escape(expect)))
    end
  end

  # A representative table: every public module, every kind of wrong argument.
  if length(cases) < 60, do: raise("the table has #{length(cases)} cases, fewer than 60")

  defp check(fun, context, expect) do
    result =
      try do
        {:returned, fun.(context)}
      rescue
        e -> {:raised, e}
      end

    case {expect, result} do
      {:returns, {:returned, _}} ->
        :ok

      {{:raises, text}, {:raised, %ArgumentError{message: message}}} ->
        refute message in ["argument error", ""]
        assert message =~ text

      {_, {:raised, e}} ->
        flunk("raised #{inspect(e.__struct__)}: #{Exception.message(e)}")

      {_, {:returned, value}} ->
        flunk("returned #{inspect(value)}, expected an ArgumentError")
    end
  end

  describe "times and seqs beyond 64 bits mean no bound, or past every event" do
    test "events", %{store: store, all: all} do
      assert all != []

      for bound <- [until: @big, until: @future, since: -@big, since: @past] do
        assert Query.events([store: store] ++ [bound]) == all, inspect(bound)
      end

      for bound <- [since: @big, since: @future, until: -@big, until: @past, after_seq: @big] do
        assert Query.events([store: store] ++ [bound]) == [], inspect(bound)
      end

      assert Query.events(store: store, before_seq: @big) == all
      assert Query.events(store: store, limit: @big) == all
      assert Query.events(store: store, after_seq: 2 ** 64 - 1) == []
      assert Query.events(store: store, any: [[until: @big]]) == all
      assert Query.events(store: store, not: [since: @past]) == []
      assert Query.count(store: store, until: @future) == length(all)
      assert Query.events_around_event(@big, 5, store: store) == []
      assert Query.events_around_event(1, @big, store: store) == all
      assert Query.execution_timeline(@past, @future, store: store) == all
      assert Query.execution_timeline({:seq, 0}, {:seq, @big}, store: store) == all
    end

    test "time travel", %{store: store, pid: pid} do
      opts = [store: store]
      assert {:ok, %{a: 3, b: 2}} = Query.state_at(pid, :now, opts)

      for t <- [@big, @future, {:seq, @big}] do
        assert Query.state_at(pid, t, opts) == {:ok, %{a: 3, b: 2}}, inspect(t)
        assert Query.states_at(t, opts) == Query.states_at(:now, opts)
        assert Query.active_processes_at(t, opts) == Query.active_processes_at(:now, opts)
      end

      for t <- [-@big, @past] do
        assert Query.state_at(pid, t, opts) == {:error, :no_state}, inspect(t)
        assert Query.active_processes_at(t, opts) == []
        assert %{active_processes: [], processes: %{}} = Query.system_snapshot_at(t, opts)
      end

      timeline = Query.state_timeline(pid, opts)
      assert length(timeline) == 3
      assert Query.state_timeline(pid, store: store, until: @big) == timeline
      assert Query.state_timeline(pid, store: store, since: -@big) == timeline
      assert Query.state_timeline(pid, store: store, since: @future) == []
      assert Query.state_evolution(pid, @past, @future, opts) == timeline
      assert [%{from: :absent, to: 1}, %{from: 1, to: 3}] = Query.key_changes(pid, :a, opts)
      assert Query.key_changes(pid, :a, store: store, since: @future) == []
      assert length(Query.key_changes(pid, :a, store: store, until: @big)) == 2
    end

    test "replay", %{store: store, all: all} do
      assert {:ok, last} = Replay.open(@big, store: store)
      assert Replay.event(last) == List.last(all)
      assert {:ok, first} = Replay.open(@past, store: store)
      assert Replay.event(first) == hd(all)
      assert {:ok, r} = Replay.jump(first, {:seq, @big})
      assert Replay.event(r) == List.last(all)
    end
  end
end
