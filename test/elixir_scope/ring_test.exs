defmodule ElixirScope.RingTest do
  # Ring mode (`overflow: :evict_oldest`) on real processes: the newest events are kept within
  # the budget, seqs go on counting, what is gone is said to be gone, and queries racing
  # evictions get whole events in seq order, each once.
  use ExUnit.Case, async: false
  import ElixirScope.ScopeCase

  alias ElixirScope.{Query, Store}

  setup do
    ElixirScope.stop()
    on_exit(&ElixirScope.stop/0)
  end

  defmodule Counter do
    use GenServer
    def init(n), do: {:ok, n}
    def handle_call(:inc, _from, %{n: n} = s), do: {:reply, n + 1, %{s | n: n + 1}}
    def handle_call(:inc, _from, n), do: {:reply, n + 1, n + 1}
  end

  alias ScopeTest.Door

  # A message that says whether it arrived whole: its number, bytes made from it, their hash.
  defp blob(i) do
    bytes = :binary.copy(<<i::32>>, 1 + rem(i, 40))
    {:blob, i, bytes, :erlang.md5(bytes)}
  end

  defp whole?({:blob, i, bytes, md5}),
    do: bytes == :binary.copy(<<i::32>>, 1 + rem(i, 40)) and md5 == :erlang.md5(bytes)

  defp whole?(_), do: false

  test "a full ring keeps its newest events, evicting the oldest, and counts on" do
    {:ok, _} = ElixirScope.start(max_events: 8 * 500, overflow: :evict_oldest)
    {:ok, pid} = GenServer.start_link(Counter, 0)
    :ok = ElixirScope.trace(pid)
    for _ <- 1..5_000, do: GenServer.call(pid, :inc)

    st = ElixirScope.status()
    assert st.overflow == :evict_oldest
    assert st.dropped == 0
    assert st.evicted > 0
    # Between seven and eight eighths of the budget, the newest events.
    assert st.events in (7 * 500)..(8 * 500)
    assert st.evicted + st.events == st.last_seq

    seqs = Query.events(limit: 100_000) |> Enum.map(& &1.seq)
    assert seqs == Enum.to_list((st.evicted + 1)..st.last_seq)
    assert Query.events(before_seq: st.evicted + 1) == []

    {:ok, %{content: [%{text: text}], isError: false}} =
      ElixirScope.MCP.Tools.call("status", %{}, %{store: :default})

    assert text =~ "a ring keeping the newest events: seqs up to #{st.evicted} were evicted"

    # The state now is there; the state before the events kept is gone, and said to be.
    assert Query.state_at(pid, :now) == {:ok, 5_000}
    assert Query.state_at(pid, {:seq, 10}) == {:error, :evicted}
    assert Query.get_state_at(pid, {:seq, 10}) == {:error, :evicted}
    # Every state kept is the counter's value at its time, in order.
    states = Query.events(kind: :state, pid: pid, limit: 100_000) |> Enum.map(& &1.data)
    assert states != [] and states == Enum.to_list(hd(states)..5_000)

    # A process born after the eviction lost nothing: before its first state there is none.
    {:ok, young} = GenServer.start_link(Counter, 100)
    :ok = ElixirScope.trace(young)
    before = ElixirScope.status().last_seq
    GenServer.call(young, :inc)
    assert Query.state_at(young, {:seq, before}) in [{:error, :no_state}, {:ok, 100}]
    assert Query.state_at(young, :now) == {:ok, 101}
  end

  test "a ring records a gen_statem's kept states as a plain store does" do
    store = new_store(overflow: :evict_oldest)
    {:ok, pid} = :gen_statem.start(Door, 42, [])
    trace_states_into(pid, store)
    :error = :gen_statem.call(pid, {:unlock, 1})
    :ok = :gen_statem.call(pid, {:unlock, 42})
    :open = :gen_statem.call(pid, :peek)

    assert Enum.map(Query.state_timeline(pid, store: store, changes_only: false), & &1.data) == [
             {:locked, %{code: 42, tries: 0}},
             {:locked, %{code: 42, tries: 1}},
             {:open, %{code: 42, tries: 0}},
             {:open, %{code: 42, tries: 0}}
           ]
  end

  test "the last state of a quiet live process outlives the events around it" do
    {:ok, _} = ElixirScope.start(max_events: 8 * 8_000, overflow: :evict_oldest)
    {:ok, quiet} = GenServer.start_link(Counter, 0)
    {:ok, gone} = GenServer.start(Counter, 10)
    :ok = ElixirScope.trace(quiet)
    :ok = ElixirScope.trace(gone)
    1 = GenServer.call(quiet, :inc)
    11 = GenServer.call(gone, :inc)
    GenServer.stop(gone)
    sink = spawn(fn -> Process.sleep(:infinity) end)
    chatty = spawn_waiting(fn -> chat(sink, 80_000) end)
    :ok = ElixirScope.trace(chatty)
    :normal = go_and_wait(chatty, 30_000)

    # The first generations (with both states) were evicted; the live one's state was
    # carried forward, unchanged; the dead one's was not.
    assert ElixirScope.status().evicted > 8_000
    assert Query.state_at(quiet, :now) == {:ok, 1}
    assert Query.state_at(gone, :now) == {:error, :evicted}
    [carried | _] = Query.events(kind: :state, pid: quiet, order: :desc, limit: 1)
    assert carried.seq > ElixirScope.status().evicted

    # The keeper is started again should it die.
    %{keeper: keeper} = :sys.get_state(ElixirScope.Server)
    Process.exit(keeper, :kill)
    wait_until(fn -> :sys.get_state(ElixirScope.Server).keeper not in [nil, keeper] end)
  end

  test "the keeper keeps up with a ring that goes round faster than four times a second" do
    # Generations of 1,000 events, filled in about 40 ms each at 25 events a millisecond.
    {:ok, _} = ElixirScope.start(max_events: 8 * 1_000, overflow: :evict_oldest)
    {:ok, quiet} = GenServer.start_link(Counter, 0)
    :ok = ElixirScope.trace(quiet)
    1 = GenServer.call(quiet, :inc)
    sink = spawn(fn -> Process.sleep(:infinity) end)
    chatty = spawn_waiting(fn -> chat(sink, 30_000) end)
    :ok = ElixirScope.trace(chatty)
    :normal = go_and_wait(chatty, 30_000)
    assert ElixirScope.status().evicted > 2 * 8 * 1_000
    assert Query.state_at(quiet, :now) == {:ok, 1}
  end

  # Sends `n` messages at about 25 a millisecond: the ring's keeper, every 250 ms, sees each
  # generation before it is evicted.
  defp chat(sink, n) do
    Enum.each(1..n, fn i ->
      send(sink, i)
      if rem(i, 200) == 0, do: Process.sleep(8)
    end)
  end

  test "where a key changed: the first state kept may or may not have changed it" do
    {:ok, _} = ElixirScope.start(max_events: 8 * 500, overflow: :evict_oldest)
    {:ok, pid} = GenServer.start_link(Counter, %{n: 0, fixed: :x})
    :ok = ElixirScope.trace(pid)
    for _ <- 1..3_000, do: GenServer.call(pid, :inc)

    assert [%{from: :evicted, to: :x}] = Query.key_changes(pid, :fixed)
    assert [%{from: :evicted, to: first} | rest] = Query.key_changes(pid, :n)
    assert Enum.map(rest, &{&1.from, &1.to}) == Enum.map((first + 1)..3_000, &{&1 - 1, &1})
  end

  test "memory stays within the budget across many laps, and the store is saved and opened" do
    {:ok, _} =
      ElixirScope.start(max_events: 8 * 1_000, max_bytes: 8 * 64 * 1024, overflow: :evict_oldest)

    sink = spawn_waiting(fn -> Enum.each(1..30_000, fn _ -> receive(do: (_ -> :ok)) end) end)
    :ok = ElixirScope.trace(sink)
    go_and_wait(spawn_waiting(fn -> for i <- 1..30_000, do: send(sink, blob(i)) end))
    :normal = go_and_wait(sink)

    st = Store.stats(Store.default())
    assert st.evicted > 8 * 1_000 * 2, "laps: #{inspect(st)}"
    assert st.payload_bytes <= 8 * 64 * 1024
    # Slots and payload chunks of eight generations (small stores use 256 KiB slot chunks).
    assert st.bytes <= 8 * (256 * 1024 + 64 * 1024) + 8 * 64 * 1024

    got = Query.events(kind: :receive, pid: sink, limit: 100_000)
    blobs = Enum.reject(got, &(&1.data == :go))
    assert blobs != [] and Enum.all?(blobs, &whole?(&1.data))
    assert List.last(blobs).data |> elem(1) == 30_000

    dir = temp_path("ring_save")
    assert {:ok, _} = ElixirScope.save(dir)
    {:ok, saved} = ElixirScope.open(dir)

    assert Enum.map(
             Query.events(kind: :receive, pid: sink, store: saved, limit: 100_000),
             & &1.seq
           ) ==
             Enum.map(got, & &1.seq)
  end

  test "queries racing evictions get whole events, in seq order, each once" do
    {:ok, _} = ElixirScope.start(max_events: 8 * 2_000, overflow: :evict_oldest)
    sink = spawn(fn -> drain() end)
    :ok = ElixirScope.trace(sink)
    writer = spawn(fn -> flood(sink, 1) end)
    wait_until(fn -> ElixirScope.status().evicted > 0 end)
    evicted = ElixirScope.status().evicted

    readers =
      for r <- 1..3 do
        Task.async(fn ->
          deadline = System.monotonic_time(:millisecond) + 2_000
          read_until(deadline, r, 0)
        end)
      end

    checked = readers |> Enum.map(&Task.await(&1, 30_000)) |> Enum.sum()
    Process.exit(writer, :kill)
    Process.exit(sink, :kill)
    assert checked > 1_000
    st = ElixirScope.status()
    # The ring went round several times while they read.
    assert st.evicted - evicted > 4 * 8 * 2_000, inspect(st)
    assert st.dropped == 0
  end

  defp drain do
    receive do
      _ -> drain()
    end
  end

  defp flood(sink, i) do
    send(sink, blob(i))
    # Never far ahead of the sink: its mailbox stays short.
    if rem(i, 1_000) == 0, do: Process.sleep(1)
    flood(sink, i + 1)
  end

  # Reads pages of the sink's messages while they are evicted under it; returns how many it
  # checked.
  defp read_until(deadline, r, checked) do
    if System.monotonic_time(:millisecond) > deadline do
      checked
    else
      evs =
        case rem(r, 3) do
          0 -> Query.events(kind: :receive, limit: 5_000)
          1 -> Query.events(kind: :receive, order: :desc, limit: 5_000)
          2 -> Query.events(limit: 5_000, after_seq: max(ElixirScope.status().evicted - 100, 0))
        end

      seqs = Enum.map(evs, & &1.seq)
      assert seqs == Enum.uniq(seqs)
      assert seqs == Enum.sort(seqs) or seqs == Enum.sort(seqs, :desc)

      received = Enum.filter(evs, &(&1.kind == :receive and &1.data != :go))
      assert Enum.all?(received, &whole?(&1.data)), "a torn event"
      # The sink receives in order: so do its events, whatever was evicted between them.
      nums = Enum.map(received, &elem(&1.data, 1))
      assert nums == Enum.sort(nums) or nums == Enum.sort(nums, :desc)
      read_until(deadline, r, checked + length(evs))
    end
  end

  test "bad overflow values and persisting a ring are refused with the reason" do
    assert_raise ArgumentError,
                 ~r/invalid :overflow :oldest, expected :drop_newest or :evict_oldest/,
                 fn ->
                   ElixirScope.start(overflow: :oldest)
                 end

    assert_raise ArgumentError, ~r/persist: keeps every event on disk/, fn ->
      ElixirScope.start(overflow: :evict_oldest, persist: [dir: temp_path("ring_persist")])
    end

    assert Store.stats(Store.new!(overflow: :evict_oldest)).overflow == :evict_oldest
    assert Store.stats(Store.new!()).overflow == :drop_newest
    refute ElixirScope.status().running
  end
end
