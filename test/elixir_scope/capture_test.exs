defmodule ElixirScope.CaptureTest do
  # Capture on real processes into private stores: exact event sequences, no loss under
  # concurrency, exact drops under overload, levels and sampling.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Store, Tracer}

  defmodule Scenario do
    def work(x), do: x * 2
    def boom(_x), do: raise(ArgumentError, "bad input")
  end

  defmodule Counter do
    use GenServer
    def init(n), do: {:ok, n}
    def handle_call(:inc, _from, n), do: {:reply, n + 1, n + 1}
  end

  setup_all do
    {:ok, _} = Tracer.trace_module(Scenario, false)
    on_exit(fn -> Tracer.untrace_module(Scenario) end)
  end

  test "a scripted scenario yields exactly the expected events, in order" do
    store = new_store()
    test_pid = self()

    p =
      spawn_waiting(fn ->
        c = spawn_link(fn -> receive do: ({:hello, from} -> send(from, :hi)) end)
        send(test_pid, {:child, c})
        Process.register(self(), :capture_test_scenario)
        send(c, {:hello, self()})
        receive do: (:hi -> :ok)
        42 = Scenario.work(21)
        {:error, %ArgumentError{}} = try_boom()
        Process.unregister(:capture_test_scenario)
        Process.unlink(c)
        exit({:shutdown, :done})
      end)

    trace_into(p, store)
    assert go_and_wait(p) == {:shutdown, :done}
    assert_received {:child, c}

    # The spawned closure cannot be written literally: check its shape, then compare the rest.
    [%{data: {:erlang, :apply, [fun, []]}}] = events(store, kind: :spawn)
    assert is_function(fun, 0)

    assert shape(events(store)) == [
             {:receive, p, nil, nil, :go},
             {:spawn, p, c, {:erlang, :apply, 2}, {:erlang, :apply, [fun, []]}},
             {:link, p, c, nil, nil},
             {:send, p, test_pid, nil, {:child, c}},
             {:register, p, nil, nil, :capture_test_scenario},
             {:send, p, c, nil, {:hello, p}},
             {:receive, p, nil, nil, :hi},
             {:call, p, nil, {Scenario, :work, 1}, [21]},
             {:return, p, nil, {Scenario, :work, 1}, 42},
             {:call, p, nil, {Scenario, :boom, 1}, [1]},
             {:exception, p, nil, {Scenario, :boom, 1},
              {:error, %ArgumentError{message: "bad input"}}},
             {:unregister, p, nil, nil, :capture_test_scenario},
             {:unlink, p, c, nil, nil},
             {:exit, p, nil, nil, {:shutdown, :done}}
           ]

    seqs = Enum.map(events(store), & &1.seq)
    assert seqs == Enum.to_list(1..14)
    assert Enum.map(events(store), & &1.ts) == Enum.sort(Enum.map(events(store), & &1.ts))
  end

  defp try_boom do
    Scenario.boom(1)
  rescue
    e -> {:error, e}
  end

  test "a receive never precedes its send, between traced processes" do
    store = new_store()
    n = 2_000
    receiver = spawn(fn -> for _ <- 1..n, do: receive(do: ({:m, _} -> :ok)) end)

    sender =
      spawn_waiting(fn ->
        for i <- 1..n, do: send(receiver, {:m, i})
      end)

    trace_into(receiver, store)
    trace_into(sender, store)
    ref = Process.monitor(receiver)
    go_and_wait(sender)
    assert_receive {:DOWN, ^ref, _, _, :normal}, 10_000

    sends = for e <- events(store, kind: :send, pid: sender), into: %{}, do: {e.data, e.seq}

    receives =
      for e <- events(store, kind: :receive, pid: receiver), into: %{}, do: {e.data, e.seq}

    assert map_size(sends) == n and map_size(receives) == n
    assert Enum.all?(1..n, fn i -> sends[{:m, i}] < receives[{:m, i}] end)
  end

  test "many processes on every scheduler: nothing lost below capacity, seq has no gaps" do
    store = new_store(max_events: 100_000)
    procs = 200
    msgs = 50
    parent = self()

    sink =
      spawn(fn ->
        for _ <- 1..(procs * msgs), do: receive(do: ({:n, _, _} -> :ok))
        send(parent, :sink_done)
        receive do: (:stop -> :ok)
      end)

    trace_into(sink, store)

    workers =
      for w <- 1..procs do
        pid = spawn_waiting(fn -> for i <- 1..msgs, do: send(sink, {:n, w, i}) end)
        trace_into(pid, store)
        pid
      end

    refs = for pid <- workers, do: {pid, Process.monitor(pid)}
    Enum.each(workers, &send(&1, :go))
    for {pid, ref} <- refs, do: assert_receive({:DOWN, ^ref, :process, ^pid, :normal}, 20_000)
    assert_receive :sink_done, 20_000

    all = events(store)
    # Each worker: receive :go, msgs sends, exit. The sink: procs * msgs receives, one send.
    expected = procs * (1 + msgs + 1) + procs * msgs + 1
    assert length(all) == expected
    assert Enum.map(all, & &1.seq) == Enum.to_list(1..expected)
    assert Store.stats(store).dropped == 0
    assert length(events(store, kind: :receive, pid: sink)) == procs * msgs
    send(sink, :stop)
  end

  test "overload: capacity 1_000 and 100_000 events store exactly 1_000 and count the rest" do
    store = new_store(max_events: 1_000)
    n = 50_000

    p =
      spawn_waiting(fn ->
        # Each round trip is one send and one receive event: 2 * n events after :go.
        sum =
          Enum.reduce(1..n, 0, fn i, acc -> send(self(), i) && receive(do: (^i -> acc + i)) end)

        send(:erlang.whereis(:capture_overload_test) || self(), {:sum, sum})
        receive do: (:stop -> :ok)
      end)

    Process.register(self(), :capture_overload_test)
    trace_into(p, store)
    ref = Process.monitor(p)
    send(p, :go)
    # The traced process is unaffected: it completes and computes the right answer.
    assert_receive {:sum, sum}, 30_000
    assert sum == div(n * (n + 1), 2)
    stats = Store.stats(store)
    # :go receive + 2n round-trip events + the {:sum, _} send.
    total = 1 + 2 * n + 1
    assert stats.events == 1_000
    assert stats.dropped == total - 1_000
    assert length(events(store)) == 1_000
    # Memory stays within one chunk of slots, one payload chunk (2 MiB) in use and at most one
    # more committed ahead.
    assert stats.bytes <= 4096 * 64 + 2 * 2 * 1_048_576
    send(p, :stop)
    assert_receive {:DOWN, ^ref, _, _, :normal}
    Process.unregister(:capture_overload_test)
  end

  test "overload with calls: a call dropped for a full store has its return counted dropped too" do
    # The VM traces a return only for a call the tracer took: a call refused for a full store
    # must still be taken (and dropped) so that its return is offered, and counted, as well.
    store = new_store(max_events: 100)
    n = 1_000
    p = spawn_waiting(fn -> for i <- 1..n, do: Scenario.work(i) end)
    trace_into(p, store)
    go_and_wait(p)
    stats = Store.stats(store)
    # :go received, n calls, n returns, the exit.
    total = 1 + 2 * n + 1
    assert stats.events == 100
    assert stats.events + stats.dropped == total
  end

  test "overload with states: a full store counts the state a callback's return would record" do
    store = new_store(max_events: 50)
    {:ok, server} = GenServer.start(Counter, 0)
    :ok = Tracer.watch_state_module(Counter, store)
    trace_into(server, store)
    n = 200
    for _ <- 1..n, do: GenServer.call(server, :inc)
    # Let the last reply's send land in the store.
    :sys.get_state(server)
    stats = Store.stats(store)
    GenServer.stop(server)
    # Each call: the request received, handle_call's call, its return, the state, the reply.
    # Then :sys.get_state's request received and its reply sent.
    assert stats.events == 50
    assert stats.events + stats.dropped == 5 * n + 2
  end

  test "at every level, a full store counts as dropped exactly the events a big one keeps" do
    run = fn store ->
      {:ok, server} = GenServer.start(Counter, 0)
      :ok = Tracer.watch_state_module(Counter, store)
      trace_into(server, store)
      for _ <- 1..100, do: GenServer.call(server, :inc)
      :sys.get_state(server)
      GenServer.stop(server)
      Store.stats(store)
    end

    for level <- [:full, :states_only, :messages_only] do
      kept = run.(new_store(tracing_level: level))
      assert kept.dropped == 0 and kept.events >= 100
      full = run.(new_store(tracing_level: level, max_events: 5))
      assert full.events == 5

      assert full.events + full.dropped == kept.events,
             "#{level}: #{inspect(full)} vs #{kept.events}"
    end
  end

  test "levels keep exactly their kinds" do
    for {level, kinds} <- [
          full: [:receive, :spawn, :send, :call, :return, :exit],
          messages_only: [:receive, :send],
          minimal: [:spawn, :exit],
          states_only: [:exit],
          off: []
        ] do
      store = new_store(tracing_level: level)

      p =
        spawn_waiting(fn ->
          spawn(fn -> :ok end)
          send(self(), :x)
          receive do: (:x -> Scenario.work(1))
        end)

      trace_into(p, store, [:set_on_spawn])
      go_and_wait(p)
      # The child is traced too (set_on_spawn) and its exit may land after its parent's.
      Process.sleep(20)
      got = store |> events(pid: p) |> Enum.map(& &1.kind) |> Enum.uniq()
      assert Enum.sort(got) == Enum.sort(kinds), "level #{level}: #{inspect(got)}"
    end
  end

  test "the level can change while tracing runs" do
    store = new_store(tracing_level: :off)
    test_pid = self()

    p =
      spawn(fn ->
        send(test_pid, :started)
        receive do: (:next -> send(test_pid, :a))
      end)

    trace_into(p, store)
    assert_receive :started
    Store.set_level(store, :messages_only)
    assert go_and_wait_msg(p, :next) == :normal

    assert store |> events() |> shape() == [
             {:receive, p, nil, nil, :next},
             {:send, p, test_pid, nil, :a}
           ]
  end

  defp go_and_wait_msg(pid, msg) do
    ref = Process.monitor(pid)
    send(pid, msg)
    assert_receive {:DOWN, ^ref, _, _, reason}, 5_000
    reason
  end

  # An untraced process that swallows messages, so traced senders get no receive events of
  # their own messages.
  defp sink do
    spawn(fn -> sink_loop() end)
  end

  defp sink_loop do
    receive do
      _ -> sink_loop()
    end
  end

  test "event sampling keeps exactly rate * n events" do
    store = new_store(sample_rate: 0.25, sample_by: :event)
    sink = sink()
    p = spawn_waiting(fn -> for i <- 1..3_999, do: send(sink, i) end)
    trace_into(p, store)
    go_and_wait(p)
    # 1 receive + 3_999 sends = 4_000 events sampled; floor(4_000 / 4) = 1_000 kept. The exit
    # is never sampled away.
    assert length(events(store, not: [kind: :exit])) == 1_000
    assert [%{pid: ^p}] = events(store, kind: :exit)
  end

  test "process sampling keeps whole processes, close to the rate" do
    store = new_store(sample_rate: 0.5, sample_by: :process)
    n = 1_000
    sink = sink()
    procs = for _ <- 1..n, do: spawn_waiting(fn -> send(sink, :a) end)
    Enum.each(procs, &trace_into(&1, store))
    Enum.each(procs, &go_and_wait/1)
    by_pid = store |> events(not: [kind: :exit]) |> Enum.group_by(& &1.pid)
    # Binomial(1000, 0.5): standard deviation 15.8; allow 5 of them.
    assert map_size(by_pid) in 421..579
    # A kept process is kept whole: receive :go, send :a.
    assert Enum.all?(by_pid, fn {_, evs} -> Enum.map(evs, & &1.kind) == [:receive, :send] end)
    # Every process's exit is kept, sampled or not.
    assert store |> events(kind: :exit) |> Enum.map(& &1.pid) |> Enum.sort() == Enum.sort(procs)
  end

  test "payloads over the cap keep size, hash and prefix, and are counted" do
    store = new_store(max_payload_bytes: 64)
    big = :binary.copy("x", 100_000)
    sink = sink()
    p = spawn_waiting(fn -> send(sink, {:big, big}) end)
    trace_into(p, store)
    go_and_wait(p)
    [send_event] = events(store, kind: :send)
    assert %ElixirScope.Event.Truncated{size: size, hash: hash, prefix: prefix} = send_event.data
    # The stored encoding: version, 2-tuple, small UTF-8 atom "big", binary of 100_000 bytes.
    head = <<131, 104, 2, 119, 3, "big", 109, 100_000::32>>
    assert size == byte_size(head) + 100_000
    assert is_integer(hash)
    assert byte_size(prefix) == 64 - 16
    assert prefix == head <> :binary.copy("x", 48 - byte_size(head))
    assert Store.stats(store).truncated == 1
  end

  test "huge payloads cost the limit: a 50 MB binary is counted, not copied; a huge list is bounded" do
    store = new_store(max_payload_bytes: 128)
    sink = sink()
    big = :binary.copy(<<7>>, 50_000_000)
    long = Enum.to_list(1..1_000_000)
    p = spawn_waiting(fn -> send(sink, {:bin, big}) && send(sink, {:list, long}) end)
    trace_into(p, store)
    go_and_wait(p)
    [bin, list] = events(store, kind: :send)

    # {:bin, <<...>>}: version, 2-tuple, atom "bin", BINARY_EXT header, the bytes.
    assert %ElixirScope.Event.Truncated{size: size, exact: true, prefix: prefix} = bin.data
    assert size == 1 + 2 + 5 + 5 + 50_000_000

    assert prefix ==
             <<131, 104, 2, 119, 3, "bin", 109, 50_000_000::32>> <> :binary.copy(<<7>>, 112 - 13)

    # Past the cap the walk only counts, over at most 64 more terms here (a sixteenth of the
    # cap's bytes, at least 64): the work is bounded by the budget, so the size of 1_000_000
    # elements is a lower bound.
    assert %ElixirScope.Event.Truncated{size: lower, exact: false} = list.data
    assert lower >= 128 and lower <= 128 + 64 * 5
    assert Store.stats(store).events == 4
  end

  test "terms of every shape round-trip through capture" do
    store = new_store(max_payload_bytes: 1_048_576)
    ref = make_ref()
    port = hd(Port.list())
    fun = &Enum.map/2

    terms = [
      :atom,
      :ünïcödé,
      :日本,
      0,
      255,
      -1,
      2_147_483_647,
      -2_147_483_648,
      9_223_372_036_854_775_807,
      -9_223_372_036_854_775_808,
      18_446_744_073_709_551_616,
      -(2 ** 200),
      1.5,
      -0.0,
      1.0,
      "binary",
      <<1::3>>,
      {},
      {1, {2, {3}}},
      List.to_tuple(Enum.to_list(1..300)),
      [],
      [1, 2, 3],
      [1 | 2],
      ~c"charlist",
      %{},
      %{a: 1, b: [2]},
      Map.new(1..100, &{&1, &1}),
      self(),
      ref,
      port,
      fun,
      fn x -> x end,
      Enum.reduce(1..1_000, :leaf, fn _, acc -> {acc} end),
      Enum.reduce(1..1_000, [], fn _, acc -> [acc] end)
    ]

    p = spawn_waiting(fn -> Enum.each(terms, &send(self(), {:t, &1})) end)
    trace_into(p, store)
    go_and_wait(p)
    got = for %{data: {:t, t}} <- events(store, kind: :send), do: t
    # Strict equality: 1 and 1.0, 0.0 and -0.0 must not pass for each other.
    assert got === terms
  end

  test "random nested terms round-trip, and their truncations at any cap agree with each other" do
    # Lists and maps whose elements mix leaves (integers, atoms, binaries, floats, pids) with
    # compounds, improper tails, maps with compound keys: every way the encoder's walk can go
    # from a container's leaves to its nested contents and back.
    seed = :erlang.phash2(make_ref())
    :rand.seed(:exsss, {seed, 7, 11})
    terms = for _ <- 1..60, do: random_term(4)

    got = capture_sends(terms, 1_048_576)
    assert got === terms, "seed #{seed}"

    # The same terms cut at small caps: the size is the same whatever the cap, and a smaller
    # cap's prefix starts the larger cap's.
    cuts = for cap <- [64, 97, 300], do: capture_sends(terms, cap)

    for i <- 0..(length(terms) - 1) do
      [a, b, c] = Enum.map(cuts, &Enum.at(&1, i))

      case {a, b, c} do
        {%ElixirScope.Event.Truncated{} = a, %ElixirScope.Event.Truncated{} = b,
         %ElixirScope.Event.Truncated{} = c} ->
          # Sizes counted to the end agree; one whose count ran out is a lower bound.
          exact = for t <- [a, b, c], t.exact, uniq: true, do: t.size
          assert length(exact) <= 1, "seed #{seed}, term #{i}"
          assert Enum.all?([a, b, c], &(&1.exact or exact == [] or &1.size <= hd(exact)))
          # A list whose end the count did not reach has no length in the prefix yet: the
          # prefixes agree when their sizes were counted to the end.
          for {x, y} <- [{a, b}, {b, c}], x.exact and y.exact do
            assert String.starts_with?(y.prefix, x.prefix), "seed #{seed}, term #{i}"
          end

        _ ->
          # Small enough to be kept whole at some cap: whole at every larger one.
          whole = Enum.drop_while([a, b, c], &match?(%ElixirScope.Event.Truncated{}, &1))
          assert Enum.all?(whole, &(&1 === {:t, Enum.at(terms, i)})), "seed #{seed}, term #{i}"
      end
    end
  end

  defp capture_sends(terms, cap) do
    store = new_store(max_payload_bytes: cap)
    p = spawn_waiting(fn -> Enum.each(terms, &send(self(), {:t, &1})) end)
    trace_into(p, store)
    go_and_wait(p)

    for %{data: data} <- events(store, kind: :send) do
      case data do
        {:t, t} when cap > 100_000 -> t
        other -> other
      end
    end
  end

  defp random_term(0), do: random_leaf()

  defp random_term(depth) do
    case :rand.uniform(7) do
      1 -> random_leaf()
      2 -> List.to_tuple(random_items(depth))
      3 -> random_items(depth)
      4 -> random_items(depth) ++ random_leaf()
      5 -> Map.new(random_items(depth), &{&1, random_term(depth - 1)})
      6 -> Map.new(1..:rand.uniform(40), &{&1, random_term(depth - 1)})
      7 -> Enum.to_list(1..:rand.uniform(300))
    end
  end

  defp random_items(depth), do: for(_ <- 0..:rand.uniform(12), do: random_term(depth - 1))

  defp random_leaf do
    Enum.random([
      :rand.uniform(1000) - 500,
      :rand.uniform(1_099_511_627_776),
      Enum.random([:a, :ok, nil, true, :"with space"]),
      :binary.copy("b", :rand.uniform(20)),
      :rand.uniform() * 100,
      self(),
      [],
      {}
    ])
  end
end
