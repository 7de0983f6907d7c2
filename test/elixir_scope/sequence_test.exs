defmodule ElixirScope.SequenceTest do
  # Query.sequence/2 on real processes: who sent what to whom, calls paired with replies drawn
  # to the caller, casts and plain messages, a call from an untraced caller, and the window.
  use ExUnit.Case, async: false
  @moduletag :capture_log

  alias ElixirScope.Query

  doctest ElixirScope.Query.Sequence

  defmodule Echo do
    use GenServer
    def init(peer), do: {:ok, peer}
    def handle_call(x, _from, peer), do: {:reply, {:echo, x}, peer}
    def handle_cast(x, peer), do: send(peer, {:cast_seen, x}) && {:noreply, peer}
  end

  setup do
    ElixirScope.stop()
    {:ok, _} = ElixirScope.start()
    on_exit(fn -> ElixirScope.stop() end)
    :ok
  end

  test "calls, replies, casts and messages between two traced processes, in capture order" do
    me = self()
    {:ok, echo} = GenServer.start(Echo, me)
    :ok = ElixirScope.trace(echo)
    :ok = ElixirScope.trace(me, children: false)

    {:echo, 1} = GenServer.call(echo, 1)
    GenServer.cast(echo, :hello)
    assert_receive {:cast_seen, :hello}
    send(echo, :plain)
    {:echo, 2} = GenServer.call(echo, 2)
    :ok = ElixirScope.untrace(me)

    messages = Query.sequence([me, echo])

    assert Enum.map(messages, &{&1.from, &1.to, &1.kind}) == [
             {me, echo, :call},
             {echo, me, :reply},
             {me, echo, :cast},
             {echo, me, :info},
             {me, echo, :info},
             {me, echo, :call},
             {echo, me, :reply}
           ]

    assert Enum.map(messages, & &1.seq) == Enum.sort(Enum.map(messages, & &1.seq))
    # Both ends traced: every message's receipt is known, after its send.
    assert Enum.all?(messages, &(is_integer(&1.received_seq) and &1.received_seq > &1.seq))
    assert Enum.all?(messages, &(&1.event.kind == :send))

    # A window: after the first reply, at most two messages; by name too.
    [_, reply | _] = messages
    Process.register(echo, :sequence_echo)
    window = Query.sequence([me, :sequence_echo], after_seq: reply.seq, limit: 2)

    assert Enum.map(window, & &1.seq) ==
             messages |> Enum.drop(2) |> Enum.take(2) |> Enum.map(& &1.seq)

    assert Query.sequence([echo]) == []
  end

  test "messages to a registered name are drawn to the process that held it" do
    me = self()
    {:ok, echo} = GenServer.start(Echo, me, name: :sequence_named)
    :ok = ElixirScope.trace(echo)
    :ok = ElixirScope.trace(me, children: false)
    send(:sequence_named, :by_name)
    GenServer.cast(:sequence_named, :cast_by_name)
    assert_receive {:cast_seen, :cast_by_name}
    :ok = ElixirScope.untrace(me)

    assert [
             %{from: ^me, to: ^echo, kind: :info, event: %{peer: :sequence_named}},
             %{from: ^me, to: ^echo, kind: :cast},
             %{from: ^echo, to: ^me, kind: :info}
           ] = Query.sequence([me, echo])
  end

  test "a call from an untraced caller is drawn from the call's receipt" do
    me = self()
    {:ok, echo} = GenServer.start(Echo, me)
    :ok = ElixirScope.trace(echo)
    {:echo, :x} = GenServer.call(echo, :x)

    assert [%{from: ^me, to: ^echo, kind: :call, event: %{kind: :receive}} = call, reply] =
             Query.sequence([me, echo])

    assert call.received_seq == call.seq
    assert %{from: ^echo, to: ^me, kind: :reply, received_seq: nil} = reply
  end

  test "bad arguments say what is allowed" do
    assert_raise ArgumentError, ~r/non-empty list/, fn -> Query.sequence([]) end
    assert_raise ArgumentError, ~r/only :store/, fn -> Query.sequence([self()], kind: :send) end
    assert_raise ArgumentError, fn -> Query.sequence([:no_such_process_name]) end
  end
end
