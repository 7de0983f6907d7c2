defmodule ElixirScope.AggregateTest do
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.Query
  alias ElixirScope.Query.Aggregate

  doctest Aggregate

  defmodule Work do
    def slow(ms), do: Process.sleep(ms)
    def fast(x), do: x + 1
    def down(0), do: :done
    def down(n), do: down(n - 1)
  end

  # Three receivers traced into one store, getting different mixes of messages.
  setup do
    store = new_store()

    loop = fn
      _loop, 0 -> :ok
      loop, k -> receive(do: (_ -> loop.(loop, k - 1)))
    end

    mixes = [
      [{:increment, 1}, {:increment, 7}, :stop],
      [{:increment, 9}, {:reset, 0}, "text", {:increment, 2}, {:increment, 6}],
      [{"not", :a_tag}]
    ]

    pids =
      for msgs <- mixes do
        pid = spawn_waiting(fn -> loop.(loop, length(msgs)) end)
        trace_into(pid, store)
        Enum.each(msgs, &send(pid, &1))
        {pid, msgs}
      end

    for {pid, _} <- pids, do: go_and_wait(pid)
    wait_until(fn -> length(events(store, kind: :exit)) == 3 end)
    %{store: store, pids: Enum.map(pids, &elem(&1, 0))}
  end

  # The reference: the same aggregation done in Elixir over Query.events/1.
  defp tag({t, _}) when is_atom(t), do: t
  defp tag(t) when is_tuple(t) and tuple_size(t) > 0 and is_atom(elem(t, 0)), do: elem(t, 0)
  defp tag(t) when is_atom(t), do: t
  defp tag(_), do: nil

  test "per_process counts each process's events as group_by does, live and from disk",
       %{store: store, pids: pids} do
    expected = Enum.frequencies_by(events(store), & &1.pid) |> Map.delete(nil)
    assert map_size(expected) == 3 and Enum.sort(Map.keys(expected)) == Enum.sort(pids)
    assert Aggregate.per_process(store: store) == expected

    assert Aggregate.per_process(store: store) ==
             Map.delete(Query.group_by([store: store], :pid), nil)

    dir = Path.join(System.tmp_dir!(), "es_per_process_#{System.unique_integer([:positive])}")
    {:ok, _} = ElixirScope.save(dir, store: store)

    {:ok, trace} = ElixirScope.open(dir)
    assert Aggregate.per_process(store: trace) == expected

    File.rm_rf!(dir)
    assert_raise ArgumentError, ~r/store/, fn -> Aggregate.per_process(store: :nope) end
  end

  test "count, group_by and top agree with Enum over the events", %{store: store, pids: pids} do
    receives = events(store, kind: :receive)
    assert Query.count(store: store, kind: :receive) == length(receives)
    assert Query.count(store: store) == length(events(store))

    assert Query.group_by([store: store, kind: :receive], :pid) ==
             Enum.frequencies_by(receives, & &1.pid)

    assert Query.group_by([store: store, kind: :receive], :tag) ==
             Enum.frequencies_by(receives, &tag(&1.data))

    assert Query.group_by([store: store], :kind) == Enum.frequencies_by(events(store), & &1.kind)

    [a, b, c] = pids
    # b got 5 messages and :go, a 3 and :go, c 1 and :go.
    assert Query.top([store: store, kind: :receive], :pid, 2) == [{b, 6}, {a, 4}]
    assert Query.top([store: store, kind: :receive], :pid) == [{b, 6}, {a, 4}, {c, 2}]
  end

  test "a content pattern narrows what is counted", %{store: store} do
    source = "{:increment, n} when n > 5"

    expected =
      store
      |> events(kind: :receive)
      |> Enum.count(&match?({:increment, n} when n > 5, &1.data))

    assert expected == 3
    assert Query.count(store: store, message: source) == expected

    assert Query.group_by([store: store, message: source], :pid) ==
             Query.find(store: store, message: source) |> Enum.frequencies_by(& &1.event.pid)

    assert Query.count(
             store: store,
             message: "{:never_seen_tag_#{System.unique_integer([:positive])}, _}"
           ) ==
             0
  end

  test "rate buckets events by time, zeros included", %{store: store} do
    worker =
      spawn_waiting(fn ->
        for i <- 1..3 do
          send(self(), {:tick, i})
          receive do: ({:tick, _} -> Process.sleep(12))
        end
      end)

    trace_into(worker, store)
    go_and_wait(worker)
    wait_until(fn -> Query.count(store: store, pid: worker, kind: :exit) == 1 end)

    filters = [store: store, pid: worker, kind: :receive]
    ns = 5_000_000
    rate = Query.rate(filters, {5, :millisecond})

    expected =
      events(store, pid: worker, kind: :receive)
      |> Enum.frequencies_by(&(Integer.floor_div(&1.ts, ns) * ns))

    assert Enum.reject(rate, fn {_, n} -> n == 0 end) == Enum.sort(expected)
    # 12 ms apart with 5 ms buckets: the empty buckets between are there, as zeros.
    assert Enum.any?(rate, fn {_, n} -> n == 0 end)

    assert rate
           |> Enum.map(&elem(&1, 0))
           |> Enum.chunk_every(2, 1, :discard)
           |> Enum.all?(fn [x, y] -> y - x == ns end)

    assert Query.rate([store: store, kind: :receive, pid: self()], 1) == []
  end

  test "durations pair calls with their returns", %{store: store} do
    {:ok, _} = ElixirScope.Tracer.trace_module(Work, true)

    worker =
      spawn_waiting(fn ->
        Work.slow(20)
        Work.fast(1)
        Work.fast(2)
        Work.down(3)
      end)

    trace_into(worker, store)
    go_and_wait(worker)
    wait_until(fn -> Query.count(store: store, pid: worker, kind: :return) == 7 end)

    by_mfa = Query.durations([store: store, pid: worker], :mfa)
    assert %{count: 1, min: slow} = by_mfa[{Work, :slow, 1}]
    assert slow >= 20_000_000
    assert %{count: 2, max: fast} = by_mfa[{Work, :fast, 1}]
    assert fast < slow
    # down/1 recursed 4 deep: each frame paired with its own return, the outermost longest.
    down = by_mfa[{Work, :down, 1}]
    assert down.count == 4

    calls = events(store, pid: worker, mfa: {Work, :down, 1}, kind: :call)
    returns = events(store, pid: worker, mfa: {Work, :down, 1}, kind: :return)
    outermost = List.last(returns).ts - List.first(calls).ts
    assert down.max == outermost

    all = Query.durations(store: store, pid: worker)
    assert all.count == 7
    assert all.max == slow
    assert_in_delta all.avg, (slow + by_mfa[{Work, :fast, 1}].avg * 2 + down.avg * 4) / 7, 1.0
    assert Query.durations(store: store, pid: self()) == nil
  end

  test "bad arguments say what is wrong", %{store: store} do
    assert_raise ArgumentError, ~r/invalid group key :color/, fn ->
      Query.top([store: store], :color)
    end

    assert_raise ArgumentError, ~r/invalid bucket {1, :fortnight}/, fn ->
      Query.rate([store: store], {1, :fortnight})
    end

    assert_raise ArgumentError, ~r/the guard uses m/, fn ->
      Query.count(store: store, message: "{:x, n} when m > 1")
    end

    assert_raise ArgumentError,
                 ~r/option :message does not apply: durations\/2 times every call/,
                 fn ->
                   Query.durations(store: store, message: "x")
                 end

    assert_raise ArgumentError,
                 ~r/option :kind does not apply: durations\/2 times every call/,
                 fn ->
                   Query.durations(store: store, kind: :send)
                 end

    assert_raise ArgumentError,
                 ~r/options :limit, :order do not apply: aggregations count every match/,
                 fn ->
                   Query.count(store: store, limit: 3, order: :desc)
                 end
  end
end
