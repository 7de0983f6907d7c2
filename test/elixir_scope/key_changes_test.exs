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
end
