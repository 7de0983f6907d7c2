defmodule ElixirScope.EventTest do
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Event, Native, Store}

  doctest Event

  test "events inspect as one readable line per kind" do
    store = new_store()
    ref = Store.ref(store)
    me = self()
    Native.trace(:send, ref, me, {:increment, 1}, %{extra: me})
    Native.trace(:send, ref, me, :hi, %{extra: :some_name})
    Native.trace(:call, ref, me, {Enum, :map, [[1], :f]}, %{})
    Native.trace(:return_from, ref, me, {Enum, :map, 2}, %{extra: [2]})
    Native.trace(:exception_from, ref, me, {Enum, :map, 2}, %{extra: {:error, :badarg}})
    Native.trace(:exit, ref, me, :normal, %{})

    lines = store |> events() |> Enum.map(&inspect/1)
    p = inspect(me)

    assert lines == [
             "#ElixirScope.Event<#1 send #{p} -> #{p} {:increment, 1}>",
             "#ElixirScope.Event<#2 send #{p} -> :some_name :hi>",
             "#ElixirScope.Event<#3 call #{p} Enum.map/2([1], :f)>",
             "#ElixirScope.Event<#4 return #{p} Enum.map/2 => [2]>",
             "#ElixirScope.Event<#5 exception #{p} Enum.map/2 raised {:error, :badarg}>",
             "#ElixirScope.Event<#6 exit #{p} exited :normal>"
           ]
  end

  test "a send to a name keeps the name as peer" do
    store = new_store()
    Native.trace(:send, Store.ref(store), self(), :hi, %{extra: {:name, :node@host}})
    assert [%Event{peer: {:name, :node@host}, data: :hi, node: node}] = events(store)
    assert node == node()
  end

  test "datetime converts ts with the store's offset" do
    store = new_store()
    before = DateTime.utc_now()
    Native.trace(:exit, Store.ref(store), self(), :x, %{})
    [e] = events(store)
    dt = Event.datetime(e, store)
    assert DateTime.diff(dt, before, :millisecond) in -5..1_000
    # DateTime keeps microseconds.
    assert abs(Store.from_datetime(store, dt) - e.ts) < 1_000
  end
end
