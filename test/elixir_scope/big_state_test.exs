defmodule ElixirScope.BigStateTest do
  # Big states, changing a little per call, are recorded exactly (stored as changes to the
  # previous state in memory, whole on disk): every recorded state is the state
  # :sys.get_state/1 gave after that call, in random runs of updates, deletions and growth,
  # live, saved and opened again.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Persist, Query, Store}

  defmodule Server do
    use GenServer
    def init(state), do: {:ok, state}
    def handle_call({:apply, f}, _from, s), do: {:reply, :ok, f.(s)}
  end

  # A random change to `s`, drawn here (the server applies it): most change one entry, some
  # add or remove one, a few rewrite it all.
  defp change(s) when is_map(s) do
    k = :rand.uniform(map_size(s) + 50)
    v = :rand.uniform(1_000_000)

    case :rand.uniform(100) do
      n when n <= 60 -> &Map.put(&1, k, {:v, v, "#{k}"})
      n when n <= 75 -> &Map.delete(&1, k)
      n when n <= 90 -> &Map.update(&1, k, [k], fn old -> [old] end)
      n when n <= 98 -> &Map.put(&1, {:nested, k}, %{at: k, list: Enum.to_list(1..rem(v, 20))})
      _ -> &Map.new(&1, fn {key, old} -> {key, {old}} end)
    end
  end

  defp change(s) when is_list(s) do
    v = :rand.uniform(1_000)
    at = :rand.uniform(length(s)) - 1

    case :rand.uniform(6) do
      n when n <= 4 -> &[v | &1]
      5 -> &tl/1
      6 -> &List.replace_at(&1, at, :changed)
    end
  end

  # The map's encoding is about 90 KB: over the 64 KiB states were once cut at.
  defp initial(:map), do: Map.new(1..6_000, &{&1, "value #{&1}"})
  defp initial(:list), do: Enum.to_list(1..3_000)

  for shape <- [:map, :list], seed <- 1..3 do
    test "every #{shape} state recorded exactly (seed #{seed})", %{} do
      :rand.seed(:exsss, {unquote(seed), 7, 13})
      # Other payloads (the calls' arguments and results, the replies) cut short: the bytes
      # stored are the states'.
      store = new_store(max_payload_bytes: 64)
      {:ok, server} = GenServer.start(Server, initial(unquote(shape)))
      trace_states_into(server, store)

      snapshots =
        for _ <- 1..150 do
          :ok = GenServer.call(server, {:apply, change(:sys.get_state(server))})
          :sys.get_state(server)
        end

      recorded = states(server, store)
      # The first is the snapshot taken when tracing began.
      assert tl(recorded) == snapshots
      assert hd(recorded) == initial(unquote(shape))

      # Stored as changes: far less than the states whole (each call's other events keep at
      # most 64 bytes each).
      whole = Enum.sum(for s <- snapshots, do: byte_size(:erlang.term_to_binary(s)))
      assert Store.stats(store).payload_bytes < whole / 4 + 150 * 12 * 64

      # Any past state, asked for by seq.
      events = Query.state_timeline(server, store: store, changes_only: false)

      for ev <- Enum.take_random(events, 20) do
        assert {:ok, ev.data} == Query.state_at(server, {:seq, ev.seq}, store: store)
      end

      # On disk, whole: the same states once saved and opened again.
      dir = temp_path("escope-big-state")
      {:ok, _} = Persist.save(store, dir)
      {:ok, disk} = ElixirScope.open(dir)
      assert states(server, disk) == recorded
      GenServer.stop(server)
    end
  end

  test "a state over 256 KiB is truncated, and the next one that fits is whole again" do
    store = new_store()
    {:ok, server} = GenServer.start(Server, %{blob: ""})
    trace_states_into(server, store)
    big = :binary.copy("x", 1_100_000)
    :ok = GenServer.call(server, {:apply, &Map.put(&1, :blob, big)})
    :ok = GenServer.call(server, {:apply, &Map.put(&1, :blob, "small")})
    :ok = GenServer.call(server, {:apply, &Map.put(&1, :n, 1)})

    assert [
             %{blob: ""},
             %ElixirScope.Event.Truncated{} = cut,
             %{blob: "small"},
             %{blob: "small", n: 1}
           ] = states(server, store)

    # Its size and hash, and no more of it than 64 KiB (or max_payload_bytes when larger).
    assert cut.size > 1_100_000 and byte_size(cut.prefix) <= 65_536
    GenServer.stop(server)
  end

  test "a store whose byte budget is smaller than a state keeps it truncated, not lost" do
    store = new_store(max_bytes: 250_000)
    {:ok, server} = GenServer.start(Server, %{blob: ""})
    trace_states_into(server, store)
    :ok = GenServer.call(server, {:apply, &Map.put(&1, :blob, :binary.copy("y", 300_000))})
    :ok = GenServer.call(server, {:apply, &Map.put(&1, :blob, :binary.copy("y", 100_000))})

    assert [%{blob: ""}, %ElixirScope.Event.Truncated{size: size, hash: hash}, %{blob: whole}] =
             states(server, store)

    assert size > 300_000 and is_integer(hash) and byte_size(whole) == 100_000
    GenServer.stop(server)
  end

  defp states(server, store) do
    for ev <- Query.state_timeline(server, store: store, changes_only: false), do: ev.data
  end
end
