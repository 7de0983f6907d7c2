defmodule ElixirScope.KeyChangesTest do
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.Query

  defmodule Cart do
    use GenServer
    def init(_), do: {:ok, %{items: [], total: 0, owner: :nobody}}

    def handle_call({:add, price}, _from, s),
      do: {:reply, :ok, %{s | items: [price | s.items], total: s.total + price}}

    def handle_call({:owner, o}, _from, s), do: {:reply, :ok, Map.put(s, :owner, o)}
    def handle_call(:drop_owner, _from, s), do: {:reply, :ok, Map.delete(s, :owner)}
    def handle_call(:noop, _from, s), do: {:reply, :ok, s}
  end

  # The reference: every recorded state, compared key by key with the previous one.
  defp reference(store, pid, key) do
    {changes, _} =
      store
      |> then(&Query.state_timeline(pid, store: &1, changes_only: false))
      |> Enum.flat_map_reduce(:absent, fn e, before ->
        now = Map.get(e.data, key, :absent)
        {if(now == before, do: [], else: [{e.seq, before, now}]), now}
      end)

    changes
  end

  test "key_changes follows one key through a GenServer's states, as a diff of all states would" do
    store = new_store()
    {:ok, cart} = GenServer.start_link(Cart, nil)
    trace_states_into(cart, store)

    calls =
      [{:add, 5}, :noop, {:owner, :ann}, {:add, 7}, :noop, {:add, 0}, {:owner, :bob}, :drop_owner] ++
        [{:add, 1}, {:owner, :cy}]

    for c <- calls, do: :ok = GenServer.call(cart, c)

    wait_until(fn ->
      length(Query.state_timeline(cart, store: store, changes_only: false)) == 11
    end)

    for key <- [:total, :owner, :items, :missing] do
      got = for c <- Query.key_changes(cart, key, store: store), do: {c.event.seq, c.from, c.to}
      assert got == reference(store, cart, key), "key #{key}"
    end

    assert [
             %{from: :absent, to: :nobody},
             %{to: :ann},
             %{to: :bob},
             %{from: :bob, to: :absent},
             %{from: :absent, to: :cy}
           ] = Query.key_changes(cart, :owner, store: store)

    # A window keeps the changes inside it, with their true previous values.
    [_initial, _first_add, second_add | _] = Query.key_changes(cart, :total, store: store)

    assert [%{from: 5, to: 12}, %{from: 12, to: 13}] =
             Query.key_changes(cart, :total, store: store, since: second_add.event)
  end

  defmodule Blob do
    use GenServer
    def init(_), do: {:ok, %{count: 0, blob: ""}}
    def handle_call({:count, n}, _from, s), do: {:reply, :ok, %{s | count: n}}
    def handle_call({:blob, b}, _from, s), do: {:reply, :ok, %{s | blob: b}}
  end

  test "a state over the payload cap hides its keys, but is no change from absent to absent" do
    # States are kept whole up to 256 KiB (however small max_payload_bytes); past that only a
    # size, a hash and a prefix: which keys changed is unknown.
    store = new_store(max_payload_bytes: 64)
    {:ok, blob} = GenServer.start_link(Blob, nil)
    trace_states_into(blob, store)
    big = &String.duplicate("x", &1)

    # Small, then three different truncated states, then small again.
    calls = [
      {:count, 1},
      {:blob, big.(1_100_000)},
      {:blob, big.(1_200_000)},
      {:blob, big.(1_300_000)}
    ]

    for c <- calls ++ [{:blob, ""}, {:count, 4}], do: :ok = GenServer.call(blob, c)

    states = fn pid ->
      Query.state_timeline(pid, store: store, changes_only: false)
    end

    wait_until(fn -> length(states.(blob)) == 7 end)
    assert [false, false, true, true, true, false, false] = Enum.map(states.(blob), &truncated?/1)

    assert [
             %{from: :absent, to: 0},
             %{from: 0, to: 1},
             %{from: 1, to: :absent},
             %{from: :absent, to: 1},
             %{from: 1, to: 4}
           ] = Query.key_changes(blob, :count, store: store)

    assert [
             %{from: :absent, to: ""},
             %{from: "", to: :absent},
             %{from: :absent, to: ""}
           ] = Query.key_changes(blob, :blob, store: store)

    # A process whose every state is truncated has no known key changes at all.
    {:ok, all_big} = GenServer.start_link(Blob, nil)
    :ok = GenServer.call(all_big, {:blob, big.(1_100_000)})
    trace_states_into(all_big, store)
    for n <- 1..3, do: :ok = GenServer.call(all_big, {:blob, big.(1_100_000 + n)})
    wait_until(fn -> length(states.(all_big)) == 4 end)
    assert Enum.all?(states.(all_big), &truncated?/1)
    assert Query.key_changes(all_big, :count, store: store) == []
    assert Query.key_changes(all_big, :blob, store: store) == []
  end

  defp truncated?(event), do: match?(%ElixirScope.Event.Truncated{}, event.data)
end
