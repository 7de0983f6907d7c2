defmodule ElixirScope.StoreTest do
  use ExUnit.Case, async: true

  alias ElixirScope.{Native, Store}

  doctest Store

  test "stats count events, drops and memory of a bounded store" do
    store = Store.new!(max_events: 3, max_bytes: 1_024)
    ref = Store.ref(store)
    for i <- 1..5, do: Native.trace(:exit, ref, self(), {:reason, i}, %{})
    stats = Store.stats(store)
    assert %{events: 3, dropped: 2, capacity: 3, max_bytes: 1_024, last_seq: 3} = stats
    # One chunk of 4096 slots (64 bytes each) and one payload chunk of max_bytes.
    assert stats.bytes == 4096 * 64 + 1_024
    assert stats.payload_bytes > 0
  end

  test "a spent byte budget keeps events without their payload" do
    store = Store.new!(max_bytes: 64)
    ref = Store.ref(store)
    Native.trace(:exit, ref, self(), :binary.copy("a", 40), %{})
    Native.trace(:exit, ref, self(), :binary.copy("b", 40), %{})

    assert [%{data: "aaaa" <> _}, %{data: %ElixirScope.Event.Truncated{size: :unknown}}] =
             ElixirScope.Query.events(store: store)

    assert Store.stats(store).truncated == 1
  end

  test "inspect hides the reference" do
    assert inspect(Store.new!(max_events: 10)) == "#ElixirScope.Store<0/10 events, 0 dropped>"
  end
end
