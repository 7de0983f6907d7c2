defmodule ElixirScope.QueryTest do
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Query, Store, Tracer}

  doctest Query

  defmodule Calc do
    def add(a, b), do: a + b
    def neg(a), do: -a
  end

  # A client and a server exchanging known messages, both traced into a private store.
  setup do
    {:ok, _} = Tracer.trace_module(Calc, false)
    on_exit(fn -> Tracer.untrace_module(Calc) end)
    store = new_store()
    test_pid = self()

    server =
      spawn(fn ->
        loop = fn loop ->
          receive do
            {:add, from, a, b} -> send(from, {:sum, Calc.add(a, b)}) && loop.(loop)
            :stop -> :ok
          end
        end

        loop.(loop)
      end)

    client =
      spawn_waiting(fn ->
        for i <- 1..3 do
          send(server, {:add, self(), i, i})
          receive do: ({:sum, _} -> :ok)
        end

        Calc.neg(1)
        send(test_pid, :client_done)
      end)

    trace_into(server, store)
    trace_into(client, store)
    go_and_wait(client)
    send(server, :stop)
    ref = Process.monitor(server)
    assert_receive {:DOWN, ^ref, _, _, _}
    %{store: store, server: server, client: client, test_pid: test_pid}
  end

  test "message_flow, messages_from and messages_to", %{store: store, server: s, client: c} do
    assert Enum.map(Query.message_flow(c, s, store: store), & &1.data) ==
             for(i <- 1..3, do: {:add, c, i, i})

    assert Enum.map(Query.message_flow(s, c, store: store), & &1.data) ==
             [{:sum, 2}, {:sum, 4}, {:sum, 6}]

    assert length(Query.messages_from(c, store: store)) == 4

    assert Enum.map(Query.messages_to(s, store: store), & &1.data) ==
             for(i <- 1..3, do: {:add, c, i, i}) ++ [:stop]
  end

  test "timeline holds the process's events and those naming it", %{
    store: store,
    server: s,
    client: c
  } do
    timeline = Query.timeline(s, store: store)
    assert Enum.all?(timeline, &(&1.pid == s or &1.peer == s))
    kinds = Enum.frequencies_by(timeline, & &1.kind)
    # 3 receives + :stop, 3 calls and returns, 3 replies, 3 client sends naming it, its exit.
    assert kinds == %{receive: 4, call: 3, return: 3, send: 6, exit: 1}
    assert timeline == Enum.sort_by(timeline, & &1.seq)

    assert Query.timeline(c, store: store, order: :desc) ==
             Enum.reverse(Query.timeline(c, store: store))
  end

  test "function_calls and module_function_calls", %{store: store, server: s, client: c} do
    assert Enum.map(Query.function_calls(Calc, :add, store: store), &{&1.pid, &1.data}) ==
             for(i <- 1..3, do: {s, [i, i]})

    assert Query.function_calls(Calc, :add, arity: 3, store: store) == []
    assert [%{pid: ^c, data: [1]}] = Query.function_calls(Calc, :neg, store: store)
    assert length(Query.module_function_calls(Calc, store: store)) == 4

    outcomes =
      Query.events(store: store, mfa: {Calc, :add, 2}, kind: [:call, :return])
      |> Enum.map(&{&1.kind, &1.data})

    assert outcomes == Enum.flat_map(1..3, &[{:call, [&1, &1]}, {:return, 2 * &1}])

    # module: is short for mfa: Mod, also inside any:/not:.
    assert events(store, module: Calc) == events(store, mfa: Calc)

    assert events(store, any: [[module: Calc]], kind: :call) ==
             events(store, mfa: Calc, kind: :call)
  end

  test "paging with limit and after_seq walks every event exactly once", %{store: store} do
    all = Query.events(store: store)
    assert length(all) > 10

    pages =
      Stream.unfold(0, fn after_seq ->
        case Query.events(store: store, after_seq: after_seq, limit: 4) do
          [] -> nil
          page -> {page, List.last(page).seq}
        end
      end)
      |> Enum.to_list()

    assert Enum.all?(pages, &(length(&1) <= 4))
    assert List.flatten(pages) == all
    assert Query.events(store: store, before_seq: 3) == Enum.take(all, 2)
  end

  test "time windows, as monotonic ns and as DateTime", %{store: store} do
    all = Query.events(store: store)
    mid = Enum.at(all, div(length(all), 2))
    later = Query.events(store: store, since: mid.ts)
    assert hd(later).ts >= mid.ts
    assert Enum.all?(later, &(&1.ts >= mid.ts))
    # A DateTime has microseconds: it means the monotonic time it converts back to.
    dt = Store.to_datetime(store, mid.ts)

    assert Query.events(store: store, since: dt) ==
             Query.events(store: store, since: Store.from_datetime(store, dt))

    assert length(Query.events(store: store, since: dt)) >= length(later)
    assert Query.events(store: store, until: mid.ts) |> Enum.all?(&(&1.ts <= mid.ts))
  end

  test "any: and not: compose filters natively, as Enum.filter would", %{
    store: store,
    server: s,
    client: c
  } do
    all = events(store)

    composed =
      events(store,
        any: [[pid: s, kind: :receive], [pid: c, mfa: {Calc, :neg, 1}]],
        not: [kind: :return]
      )

    expected =
      Enum.filter(all, fn e ->
        ((e.pid == s and e.kind == :receive) or
           (e.pid == c and match?({Calc, :neg, 1}, e.mfa))) and e.kind != :return
      end)

    assert composed == expected

    assert Enum.any?(composed, &(&1.kind == :receive)) and
             Enum.any?(composed, &(&1.kind == :call))

    # not: with several filters, nested any:, and with the other options.
    assert events(store, not: [[pid: s], [kind: [:send, :exit]]]) ==
             Enum.filter(all, &(&1.pid != s and &1.kind not in [:send, :exit]))

    assert events(store, pid: c, any: [[any: [[kind: :send]]]], limit: 2) ==
             all |> Enum.filter(&(&1.pid == c and &1.kind == :send)) |> Enum.take(2)

    assert Query.count(store: store, any: [[kind: :send], [kind: :receive]]) ==
             Enum.count(all, &(&1.kind in [:send, :receive]))

    assert_raise ArgumentError, ~r/invalid :any {:kind, :send}/, fn ->
      events(store, any: [kind: :send])
    end

    assert_raise ArgumentError, ~r/unknown option :limit \(allowed/, fn ->
      events(store, not: [limit: 1])
    end

    deep = Enum.reduce(1..10, [kind: :send], fn _, acc -> [any: [acc]] end)
    assert_raise ArgumentError, ~r/nest at most 8 deep/, fn -> events(store, deep) end
  end

  test "the shorthand queries are events/1 with their filters", %{
    store: store,
    server: s,
    client: c
  } do
    all = events(store)
    of = fn pred -> Enum.filter(all, pred) end
    assert Query.process_events(s, store: store) == of.(&(&1.pid == s))

    assert Query.execution_path(c, store: store) ==
             of.(&(&1.pid == c and &1.kind in [:call, :return, :exception]))

    assert Query.process_spawns(store: store) == of.(&(&1.kind == :spawn))
    assert [%{pid: ^c}] = Query.process_exits(store: store, pid: c)

    gen = [:receive, :call, :return, :exception, :state, :send]
    assert Query.genserver_events(s, store: store) == of.(&(&1.pid == s and &1.kind in gen))

    middle = Enum.at(all, 5)
    around = Query.events_around_event(middle, 2, store: store)
    assert Enum.map(around, & &1.seq) == Enum.to_list((middle.seq - 2)..(middle.seq + 2))
    assert Query.events_around_event(middle.seq, 0, store: store) == [middle]

    [first, second | _] = all
    last = List.last(all)
    assert Query.execution_timeline(second, last, store: store) == tl(all)

    assert Query.execution_timeline({:seq, first.seq}, {:seq, second.seq}, store: store) == [
             first,
             second
           ]

    assert Query.execution_timeline(first.ts, second.ts, store: store) ==
             of.(&(&1.ts <= second.ts))
  end

  test "filters that match nothing", %{store: store} do
    # A pid of another node (NEW_PID_EXT naming other@host): never a key of local events.
    remote = :erlang.binary_to_term(<<131, 88, 100, 10::16, "other@host", 1::32, 0::32, 1::32>>)
    assert node(remote) == :other@host
    assert Query.events(store: store, pid: remote) == []
    assert Query.events(store: store, involving: [remote]) == []
    assert Query.events(store: store, mfa: {Calc, :nope, :_}) == []
    assert Query.events(store: store, mfa: {NoSuchModuleEver, :f, 1}) == []
    assert Query.events(store: store, limit: 0) == []
    assert Query.events(store: new_store()) == []
  end

  test "invalid filters raise ArgumentError naming the option" do
    for {filters, text} <- [
          {[kind: :bogus], "invalid :kind :bogus, expected one of:"},
          {[kind: "send"], "invalid :kind \"send\""},
          {[pid: :self], "invalid :pid :self: no process is registered under that name"},
          {[pid: "self"], "invalid :pid \"self\", expected a pid, a registered name"},
          {[peer: [1]], "invalid :peer 1"},
          {[mfa: {:_, :f, 1}], "invalid :mfa"},
          {[mfa: "Calc"], "invalid :mfa"},
          {[mfa: {Calc, :add, 300}], "invalid :mfa"},
          {[since: "yesterday"], "invalid :since"},
          {[after_seq: -1], "invalid :after_seq -1"},
          {[limit: -5], "invalid :limit -5"},
          {[order: :random], "invalid :order :random"},
          {[store: :default], "invalid :store :default"},
          {[nope: 1], "unknown option :nope (allowed"},
          {[kinds: :send], "unknown option :kinds, did you mean :kind?"}
        ] do
      filters = Keyword.put_new(filters, :store, new_store())
      error = assert_raise ArgumentError, fn -> Query.events(filters) end
      assert error.message =~ text
    end
  end
end
