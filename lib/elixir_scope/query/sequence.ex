defmodule ElixirScope.Query.Sequence do
  @moduledoc """
  The messages exchanged among a set of processes, in capture order: what a sequence diagram
  draws. Each message has a sender and a receiver among the processes, its kind (a
  `GenServer` `:call`, its `:reply`, a `:cast`, or any other message, `:info`), the seq of the
  event that shows it and, when both ends were traced, the seq of its receipt.

  A message is found from its `:send` event when the sender is traced (a reply, sent to an alias
  of the caller, is drawn to the caller; a message sent to a registered name, to the process
  that held it), and from its `:receive` event otherwise, when the receiver is traced and the
  message says who sent it (a `GenServer` call names its caller).

  ## Examples

      iex> ElixirScope.Query.Sequence.messages([self()], store: ElixirScope.Store.new!())
      []
  """

  alias ElixirScope.{Args, Event, Query}
  alias ElixirScope.Query.Names

  @typedoc "A message between two of the processes."
  @type message :: %{
          seq: Event.seq(),
          ts: integer(),
          from: pid(),
          to: pid(),
          kind: :call | :reply | :cast | :info,
          event: Event.t(),
          received_seq: Event.seq() | nil
        }

  @doc """
  The messages among `pids` (pids or names, at least one), oldest first. Takes the filters of
  `ElixirScope.Query.events/1` for the window: `:since`, `:until`, `:after_seq`, `:before_seq`,
  `:limit` (of messages) and `:store`.
  """
  @spec messages([ElixirScope.Query.Names.process()], keyword()) :: [message()]
  def messages(pids, filters \\ []) do
    filters = Args.opts!(filters)
    window = Keyword.take(filters, [:store, :since, :until, :after_seq, :before_seq])
    limit = Keyword.get(filters, :limit, :infinity)

    unless Keyword.keys(filters) -- [:store, :since, :until, :after_seq, :before_seq, :limit] ==
             [],
           do:
             Args.bad!(
               "filters",
               filters,
               "only :store, :since, :until, :after_seq, :before_seq and :limit"
             )

    store = fn -> Query.store!(Keyword.get(filters, :store)) end

    pids =
      case List.wrap(pids) do
        [] -> Args.bad!("pids", pids, "a non-empty list of processes")
        list -> list |> Enum.map(&Names.resolve!(&1, store, "pids")) |> Enum.uniq()
      end

    set = MapSet.new(pids)

    # Each message's two halves, paired once per receiver (pairing one message at a time
    # would walk its receiver's events each time); a send's receiver is known from it even
    # when it named an alias or a registered name.
    ref = ElixirScope.Store.ref(store.())

    pairs =
      for pid <- pids,
          {sent, received} <- ElixirScope.Native.query_message_pairs(ref, pid),
          reduce: %{} do
        acc ->
          acc |> Map.put({:send, sent}, {pid, received}) |> Map.put({:receive, received}, sent)
      end

    # Every message shows in an event of one of the processes: their own sends and receives,
    # read a page at a time until `limit` messages are found.
    collect(pids, set, pairs, window, limit, %{}, [])
  end

  @page 2_000

  defp collect(pids, set, pairs, window, limit, aliases, acc) do
    events = Query.events([pid: pids, kind: [:send, :receive], limit: @page] ++ window)

    # Who each call alias belongs to: the caller named in every `$gen_call` seen so far.
    aliases =
      for %Event{data: {:"$gen_call", {caller, [:alias | ref]}, _}} <- events,
          is_pid(caller),
          into: aliases,
          do: {ref, caller}

    acc = Enum.reverse(Enum.flat_map(events, &message(&1, set, aliases, pairs)), acc)
    found = length(acc)

    cond do
      limit != :infinity and found >= limit ->
        acc |> Enum.reverse() |> Enum.take(limit)

      length(events) < @page ->
        Enum.reverse(acc)

      true ->
        next = Keyword.put(window, :after_seq, List.last(events).seq)
        collect(pids, set, pairs, next, limit, aliases, acc)
    end
  end

  defp message(%Event{kind: :send} = e, set, aliases, pairs) do
    {receiver, received} = Map.get(pairs, {:send, e.seq}, {nil, nil})

    to =
      case e.peer do
        pid when is_pid(pid) -> pid
        # A reply to an alias, a message to a name: its receipt says who got it, else the
        # call that made the alias.
        ref when is_reference(ref) -> receiver || aliases[ref]
        _ -> receiver
      end

    if to in set do
      [entry(e, e.pid, to, received)]
    else
      []
    end
  end

  # A receive shows a message whose send was not traced; only a call says who sent it.
  defp message(%Event{kind: :receive, data: {:"$gen_call", {caller, _}, _}} = e, set, _, pairs)
       when is_pid(caller) do
    traced_send? = Map.has_key?(pairs, {:receive, e.seq})

    if caller in set and caller != e.pid and not traced_send?,
      do: [entry(e, caller, e.pid, e.seq)],
      else: []
  end

  defp message(_event, _set, _aliases, _pairs), do: []

  defp entry(e, from, to, received) do
    %{
      seq: e.seq,
      ts: e.ts,
      from: from,
      to: to,
      kind: kind(e.data),
      event: e,
      received_seq: received
    }
  end

  defp kind({:"$gen_call", _, _}), do: :call
  defp kind({:"$gen_cast", _}), do: :cast
  defp kind({[:alias | ref], _}) when is_reference(ref), do: :reply
  defp kind({ref, _}) when is_reference(ref), do: :reply
  defp kind(_), do: :info
end
