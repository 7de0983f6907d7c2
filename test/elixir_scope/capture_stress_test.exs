defmodule ElixirScope.CaptureStressTest do
  # Capture and queries at once, for a bounded time: 8 processes capture (messages, and calls
  # of a traced GenServer whose states are recorded) while 4 processes query as they go. What
  # the README promises must hold throughout and at the end: seqs strictly increasing and
  # gapless, each process's messages in the order it sent them, a pager that follows the
  # capture with `after_seq` never stepping over an event that appears later, states only
  # moving forward, every event stored or counted dropped.
  use ExUnit.Case, async: false
  import ElixirScope.ScopeCase

  alias ElixirScope.{Query, Store}

  @moduletag timeout: 60_000

  # How long the capturing processes run (ELIXIR_SCOPE_STRESS_SECONDS for a longer run by hand).
  @millis String.to_integer(System.get_env("ELIXIR_SCOPE_STRESS_SECONDS", "3")) * 1000

  # A state big enough to be stored as changes (see `capture::delta`): read back whole while
  # changes are appended.
  defmodule Counter do
    use GenServer
    def init(n), do: {:ok, %{n: n, seen: Map.new(1..100, &{&1, "tick #{&1}"})}}

    def handle_call({:add, k}, _from, %{n: n} = s),
      do: {:reply, n + k, %{s | n: n + k, seen: Map.put(s.seen, rem(n, 100) + 1, n)}}
  end

  test "8 processes capturing and 4 querying: ordered, gapless, nothing missed or lost" do
    store = new_store(max_events: 4_000_000)
    {:ok, counter} = GenServer.start(Counter, 0)
    trace_states_into(counter, store)
    parent = self()
    sink = spawn(fn -> sink() end)
    trace_into(sink, store)
    deadline = System.monotonic_time(:millisecond) + @millis

    producers =
      for w <- 1..8 do
        pid =
          spawn_waiting(fn ->
            send(parent, {:made, self(), produce(sink, counter, w, 1, deadline)})
          end)

        trace_into(pid, store)
        pid
      end

    pager = Task.async(fn -> page(store, 0, 0) end)

    queriers = [
      pager,
      Task.async(fn -> states(store, counter, 0, 0, producers) end),
      Task.async(fn -> counts(store, 0, 0, producers) end),
      Task.async(fn -> timelines(store, producers, 0, producers) end)
    ]

    Enum.each(producers, &send(&1, :go))
    made = for p <- producers, into: %{}, do: {p, receive(do: ({:made, ^p, n} -> n))}
    # The sink has taken every message (its receives are events): from now on nothing is
    # captured, and the pager can read the rest.
    send(sink, {:sync, self()})
    assert_receive :synced, 30_000
    send(pager.pid, :finish)

    [paged, state_reads, count_reads, timeline_reads] =
      Enum.map(queriers, &Task.await(&1, 30_000))

    stats = Store.stats(store)
    all = Query.events(store: store)
    n = length(all)
    assert stats.dropped == 0 and stats.truncated == 0
    assert stats.events == n
    assert Enum.map(all, & &1.seq) == Enum.to_list(1..n)

    # Each producer's messages to the sink, all of them, in the order it sent them.
    for {p, made} <- made do
      ticks = for %{kind: :send, pid: ^p, data: {:tick, _, i}} <- all, do: i

      assert ticks == Enum.to_list(1..made), "#{inspect(p)} sent 1..#{made}"
    end

    # The pager saw every event once, in order, never one past a gap that later filled.
    assert paged == n
    assert state_reads > 10 and count_reads > 10 and timeline_reads > 10
    GenServer.stop(counter)
    send(sink, :stop)
  end

  defp sink do
    receive do
      :stop -> :ok
      {:sync, from} -> send(from, :synced) && sink()
      _ -> sink()
    end
  end

  # Sends ticks, and every sixteenth tick a call to the counter, until the deadline (or 30,000
  # ticks, to keep the store's size reasonable: each call's events hold the counter's state);
  # the number of ticks sent.
  defp produce(sink, counter, w, i, deadline) do
    send(sink, {:tick, w, i})
    if rem(i, 16) == 0, do: GenServer.call(counter, {:add, 1})

    if i < 30_000 and System.monotonic_time(:millisecond) < deadline,
      do: produce(sink, counter, w, i + 1, deadline),
      else: i
  end

  defp running?(producers), do: Enum.any?(producers, &Process.alive?/1)

  # Follows the capture a page at a time: each page starts right after the last seq seen,
  # with no gap. Once told that nothing more is captured (`:finish`), reads the rest; returns
  # how many events it saw.
  defp page(store, last, seen) do
    page = Query.events(store: store, after_seq: last, limit: 500)
    check_follows(page, last)

    cond do
      page != [] ->
        page(store, List.last(page).seq, seen + length(page))

      finished?() ->
        rest = Query.events(store: store, after_seq: last)
        check_follows(rest, last)
        seen + length(rest)

      true ->
        page(store, last, seen)
    end
  end

  defp check_follows(page, last),
    do: assert(Enum.map(page, & &1.seq) == Enum.to_list((last + 1)..(last + length(page))//1))

  defp finished? do
    receive do
      :finish -> true
    after
      0 -> false
    end
  end

  # The counter's state now, as recorded: never going back.
  defp states(store, counter, prev, reads, producers) do
    if running?(producers) do
      n =
        case Query.state_at(counter, :now, store: store) do
          {:ok, %{n: n, seen: seen}} ->
            # Whole and consistent: the last key it changed holds the count before.
            assert n == 0 or Map.fetch!(seen, rem(n - 1, 100) + 1) == n - 1
            n

          {:error, :no_state} ->
            0
        end

      assert n >= prev
      states(store, counter, n, reads + 1, producers)
    else
      reads
    end
  end

  # Counts of sends: never going back.
  defp counts(store, prev, reads, producers) do
    if running?(producers) do
      n = Query.count(store: store, kind: :send)
      assert n >= prev
      counts(store, n, reads + 1, producers)
    else
      reads
    end
  end

  # A producer's timeline: its ticks in order.
  defp timelines(store, [p | rest], reads, producers) do
    if running?(producers) do
      ticks = for %{kind: :send, data: {:tick, _, i}} <- Query.timeline(p, store: store), do: i
      assert ticks == Enum.to_list(1..length(ticks)//1)
      timelines(store, rest ++ [p], reads + 1, producers)
    else
      reads
    end
  end
end
