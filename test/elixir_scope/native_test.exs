defmodule ElixirScope.NativeTest do
  # The NIF boundary: bad input is badarg or a harmless answer, never a crash, and the store
  # stays intact.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Native, Store}

  test "store_new rejects bad types and out-of-range settings" do
    ok = %{
      max_events: 10,
      max_bytes: 10,
      max_payload_bytes: 100,
      tracing_level: :full,
      sample_rate: 1.0,
      sample_by: :process
    }

    assert {:ok, _} = Native.store_new(ok)
    assert_raise ArgumentError, fn -> Native.store_new(%{ok | max_events: -1}) end
    assert_raise ArgumentError, fn -> Native.store_new(%{ok | tracing_level: :loud}) end
    assert_raise ArgumentError, fn -> Native.store_new(%{ok | tracing_level: "full"}) end
    assert_raise ArgumentError, fn -> Native.store_new(%{ok | sample_by: :pid}) end
    assert_raise ArgumentError, fn -> Native.store_new(Map.delete(ok, :sample_by)) end
    assert_raise ArgumentError, fn -> Native.store_new({10, 10, 100, :full, 1.0, :process}) end
    # `overflow` is optional: a ring when asked, nothing else taken.
    assert {:ok, ring} = Native.store_new(Map.put(ok, :overflow, :evict_oldest))
    assert Native.store_stats(ring).overflow == :evict_oldest
    assert Native.store_stats(elem(Native.store_new(ok), 1)).overflow == :drop_newest
    assert_raise ArgumentError, fn -> Native.store_new(Map.put(ok, :overflow, :oldest)) end
    assert_raise ArgumentError, fn -> Native.store_new(Map.put(ok, :overflow, "evict_oldest")) end

    assert {:error, {:invalid_option, "max_payload_bytes", _}} =
             Native.store_new(%{ok | max_payload_bytes: 1})

    assert {:error, {:invalid_option, "max_events", _}} = Native.store_new(%{ok | max_events: 0})

    assert {:error, {:invalid_option, "sample_rate", _}} =
             Native.store_new(%{ok | sample_rate: 2.0})

    # store_check says the same without making a store.
    assert :ok = Native.store_check(ok)

    assert {:error, {:invalid_option, "max_events", _}} =
             Native.store_check(%{ok | max_events: 0})
  end

  test "the tracer callbacks survive any state and arguments" do
    store = new_store()
    ref = Store.ref(store)
    assert Native.enabled(:send, :not_a_store, self()) == :remove
    assert Native.enabled(:send, make_ref(), self()) == :remove
    assert Native.enabled(:trace_status, ref, self()) == :trace
    assert Native.enabled(:spawned, ref, self()) == :discard
    assert Native.enabled(:send, ref, :not_a_pid) == :trace
    assert Native.trace(:send, :junk, self(), :msg, %{}) == :ok
    assert Native.trace(:call, ref, self(), :not_an_mfa, %{}) == :ok
    assert Native.trace(:send, ref, self(), :msg, :not_a_map) == :ok
    assert Native.trace(:return_from, ref, self(), {1, 2, 3, 4}, %{extra: 1}) == :ok
    assert Native.trace(:whatever, ref, self(), :msg, %{}) == :ok
    # Three of those named our store and a recordable kind: they are stored, in order, with
    # what could be made of them.
    assert [
             %{kind: :call, mfa: nil, data: nil},
             %{kind: :send, peer: nil, data: :msg},
             %{kind: :return, mfa: nil, data: 1}
           ] = events(store)

    Store.close(store)
    assert Native.enabled(:send, ref, self()) == :remove
    assert Native.enabled(:trace_status, ref, self()) == :remove
    assert Native.trace(:send, ref, self(), :late, %{extra: self()}) == :ok
    assert length(events(store)) == 3
  end

  test "store_record takes only local pids" do
    ref = Store.ref(new_store())
    remote = :erlang.binary_to_term(<<131, 88, 100, 10::16, "other@host", 1::32, 0::32, 1::32>>)
    assert node(remote) == :other@host
    assert_raise ArgumentError, fn -> Native.store_record(ref, :state, remote, nil, 1) end
    assert_raise ArgumentError, fn -> Native.store_record(ref, :state, :not_a_pid, nil, 1) end
    assert :ok = Native.store_record(ref, :state, self(), nil, 1)
  end

  test "query_events rejects malformed filters with badarg" do
    ref = Store.ref(new_store())
    assert_raise ArgumentError, fn -> Native.query_events(ref, :nope) end
    assert_raise ArgumentError, fn -> Native.query_events(ref, {}) end
    assert_raise ArgumentError, fn -> Native.query_events(make_ref(), {}) end

    {_, ok} = ElixirScope.Query.native_filter(store: new_store())
    assert Native.query_events(ref, ok) == []
    # Decoded by name: a missing key, a wrong value or the positional tuple of older versions.
    assert_raise ArgumentError, fn -> Native.query_events(ref, %{ok | kinds: [:nope]}) end
    assert_raise ArgumentError, fn -> Native.query_events(ref, Map.delete(ok, :none)) end
    assert_raise ArgumentError, fn -> Native.query_events(ref, %{ok | after_seq: -1}) end

    assert_raise ArgumentError, fn ->
      Native.query_events(
        ref,
        {[], [], [], [], nil, nil, nil, nil, nil, 0, nil, false, nil, [], []}
      )
    end

    # Sub-filters that are not filters.
    assert_raise ArgumentError, fn -> Native.query_events(ref, %{ok | any: [:nope]}) end
    # Nesting deeper than the NIF decodes is refused, not recursed into.
    deep = Enum.reduce(1..20, ok, fn _, acc -> %{ok | any: [acc]} end)
    assert_raise ArgumentError, fn -> Native.query_events(ref, deep) end
    assert Native.query_events(ref, %{ok | any: [ok]}) == []
  end

  test "improper lists anywhere a NIF takes a list are badarg, not a panic" do
    ref = Store.ref(new_store())
    {_, ok} = ElixirScope.Query.native_filter(store: new_store())

    for filter <- [
          %{ok | kinds: [:send | :receive]},
          %{ok | any: [ok | ok]},
          %{ok | none: [ok | :x]},
          %{ok | pids: [self() | self()]},
          %{ok | peers: [self() | :x]}
        ] do
      assert_raise ArgumentError, fn -> Native.query_events(ref, filter) end
    end

    assert_raise ArgumentError, fn ->
      Native.trace_state_callbacks(:gen_server, [{:init, 1} | :x])
    end

    assert {:error, {:not_json, "an improper list"}} = Native.json_encode([1 | 2])
    assert_raise ArgumentError, fn -> Native.query_message_pairs(ref, :not_a_pid) end
    assert Native.query_message_pairs(ref, self()) == []
  end

  test "a closed store still answers queries and stats" do
    store = new_store()
    Native.trace(:exit, Store.ref(store), self(), :bye, %{})
    Store.close(store)
    assert [%{kind: :exit, data: :bye}] = events(store)
    assert Store.stats(store).events == 1
  end
end
