defmodule ElixirScope.Replay do
  @moduledoc """
  A cursor over a capture: step forward and back through events and see, at each step, the
  states of the processes involved, their pending messages and their open calls.

      {:ok, r} = ElixirScope.Replay.open(:start, pid: counter)
      {:ok, r} = ElixirScope.Replay.next(r)
      ElixirScope.Replay.view(r)        # event, states, mailboxes, call stacks
      {:ok, r} = ElixirScope.Replay.step_until(r, kind: :exception)
      IO.puts(ElixirScope.Replay.format(r))

  A cursor is an immutable value: stepping returns a new one, so an earlier position stays
  usable. Filters given to `open/2` (any of `ElixirScope.Query.events/1`'s, such as `pid:` or
  `kind:`) decide which events the cursor visits; every step is one native query.
  """

  alias ElixirScope.{Args, Event, Query, Store}
  alias ElixirScope.Query.History

  @enforce_keys [:store, :event, :filters]
  defstruct [:store, :event, :filters]

  @type t :: %__MODULE__{store: Store.t(), event: Event.t(), filters: keyword()}

  @typedoc "What `view/1` shows about each process involved in the current event."
  @type process_view :: %{
          state: term(),
          pending: {:ok | :unknown, [Event.t()]},
          calls: [Event.t()]
        }

  @doc """
  Opens a cursor at `at`: the last matching event at or before it (`:start` for the first event,
  `:now` for the latest; a time as in `ElixirScope.Query.History`, an event or `{:seq, n}`).

  ## Options

  Any filter of `ElixirScope.Query.events/1` except `:limit`, `:order`, `:after_seq` and
  `:before_seq`, including `:store`.

  Returns `{:error, :no_events}` when nothing matches.

  ## Examples

      iex> ElixirScope.Replay.open(:start, store: ElixirScope.Store.new!())
      {:error, :no_events}
  """
  @spec open(History.time() | :start, keyword()) :: {:ok, t()} | {:error, :no_events}
  def open(at, filters \\ []) do
    {store, filters} = Keyword.pop(Args.opts!(filters), :store)
    store = Query.store!(store)

    for k <- [:limit, :order, :after_seq, :before_seq], Keyword.has_key?(filters, k) do
      raise ArgumentError, "Replay.open/2 does not take #{inspect(k)}: the cursor moves by itself"
    end

    cursor = %__MODULE__{store: store, event: nil, filters: filters}

    case at do
      :start -> first(cursor)
      _ -> jump(cursor, at)
    end
  end

  defp first(cursor) do
    case query(cursor, after_seq: 0, limit: 1) do
      [e] -> {:ok, %{cursor | event: e}}
      [] -> {:error, :no_events}
    end
  end

  @doc "The next matching event, or `{:error, :end}`."
  @spec next(t()) :: {:ok, t()} | {:error, :end}
  def next(%__MODULE__{event: %Event{} = e} = cursor) do
    case query(cursor, after_seq: e.seq, limit: 1) do
      [next] -> {:ok, %{cursor | event: next}}
      [] -> {:error, :end}
    end
  end

  def next(other), do: bad_cursor!(other)

  @doc "The previous matching event, or `{:error, :start}`."
  @spec prev(t()) :: {:ok, t()} | {:error, :start}
  def prev(%__MODULE__{event: %Event{} = e} = cursor) do
    case query(cursor, before_seq: e.seq, order: :desc, limit: 1) do
      [prev] -> {:ok, %{cursor | event: prev}}
      [] -> {:error, :start}
    end
  end

  def prev(other), do: bad_cursor!(other)

  @doc """
  Moves to the last matching event at or before `at` (a time, an event or `{:seq, n}`), or to
  the first event when `at` precedes them all.
  """
  @spec jump(t(), History.time()) :: {:ok, t()} | {:error, :no_events}
  def jump(%__MODULE__{store: %Store{}} = cursor, at) do
    bound = ElixirScope.Query.At.bound(cursor.store, :to, at)

    case query(cursor, bound ++ [order: :desc, limit: 1]) do
      [e] -> {:ok, %{cursor | event: e}}
      [] -> first(cursor)
    end
  end

  def jump(other, _at), do: bad_cursor!(other)

  @doc """
  Steps forward to the next event the cursor visits that also matches `filters`: `:kind` (an
  atom or a list), `:pid`, `:peer`, `:mfa` (`{m, f, a}`, `{m, f}` or `m`, with `:_`
  wildcards, matching any event with that mfa, states too) and `:data` (a one-argument
  function). `{:error, :end}` when there is none.
  """
  @spec step_until(t(), keyword()) :: {:ok, t()} | {:error, :end}
  def step_until(%__MODULE__{event: %Event{} = e} = cursor, filters) do
    filters = ElixirScope.Options.validate!(filters, [:kind, :pid, :peer, :mfa, :data])
    # `mfa:` is checked as Query.events/1 checks it (it is always matched here).
    if Keyword.has_key?(filters, :mfa),
      do: Query.native_filter(store: cursor.store, mfa: filters[:mfa])

    with {:ok, fun} when not is_function(fun, 1) <- Keyword.fetch(filters, :data),
         do: Args.bad!(:data, fun, "a function of arity 1")

    # Kinds and processes the cursor does not filter on already go to the native query; the
    # rest is tested here.
    {native, here} =
      Enum.split_with(filters, fn {k, _} ->
        k in [:kind, :pid, :peer] and not Keyword.has_key?(cursor.filters, k)
      end)

    find(cursor, e.seq, native, &matches?(&1, here))
  end

  def step_until(other, _filters), do: bad_cursor!(other)

  # Pages through the cursor's own events matching `native`, testing each.
  defp find(cursor, after_seq, native, pred) do
    case query(cursor, native ++ [after_seq: after_seq, limit: 500]) do
      [] ->
        {:error, :end}

      page ->
        case Enum.find(page, pred) do
          nil -> find(cursor, List.last(page).seq, native, pred)
          hit -> {:ok, %{cursor | event: hit}}
        end
    end
  end

  defp matches?(e, filters) do
    Enum.all?(filters, fn
      {:kind, k} -> e.kind in List.wrap(k)
      {:pid, p} -> e.pid in List.wrap(p)
      {:peer, p} -> e.peer in List.wrap(p)
      {:mfa, pattern} -> mfa?(pattern, e.mfa)
      {:data, fun} when is_function(fun, 1) -> fun.(e.data)
    end)
  end

  defp mfa?(_pattern, nil), do: false
  defp mfa?({m, f, a}, {em, ef, ea}), do: same?(m, em) and same?(f, ef) and same?(a, ea)
  defp mfa?({m, f}, mfa), do: mfa?({m, f, :_}, mfa)
  defp mfa?(m, mfa) when is_atom(m), do: mfa?({m, :_, :_}, mfa)

  defp same?(:_, _), do: true
  defp same?(x, y), do: x == y

  @doc "The current event."
  @spec event(t()) :: Event.t()
  def event(%__MODULE__{event: %Event{} = e}), do: e
  def event(other), do: bad_cursor!(other)

  @doc """
  The current event with, for each process it involves (its pid and a pid peer), the state, the
  pending messages and the open calls just after it.
  """
  @spec view(t()) :: %{event: Event.t(), processes: %{pid() => process_view()}}
  def view(%__MODULE__{event: %Event{} = e, store: %Store{} = store}) do
    opts = [store: store]
    at = {:seq, e.seq}

    processes =
      Map.new(Enum.filter([e.pid, e.peer], &is_pid/1) |> Enum.uniq(), fn pid ->
        state =
          case History.state_at(pid, at, opts) do
            {:ok, s} -> s
            # No state recorded, or (a ring-mode store) evicted.
            {:error, _} -> :unknown
          end

        {pid, History.process_at(pid, state, at, opts)}
      end)

    %{event: e, processes: processes}
  end

  def view(other), do: bad_cursor!(other)

  @doc "The current position as readable text (the event, then each process involved)."
  @spec format(t()) :: String.t()
  def format(%__MODULE__{event: %Event{}, store: %Store{}} = cursor) do
    %{event: e, processes: procs} = view(cursor)
    show = &inspect(&1, limit: 12, printable_limit: 120)

    lines =
      for {pid, p} <- Enum.sort(procs) do
        {known, pending} = p.pending

        [
          "  #{inspect(pid)}",
          "    state:   #{if p.state == :unknown, do: "unknown", else: show.(p.state)}",
          "    mailbox: #{length(pending)} message(s)#{if known == :unknown, do: " (consumption unknown)", else: ""}" <>
            Enum.map_join(pending, "", &("\n      " <> show.(&1.data))),
          "    calls:   " <>
            if(p.calls == [], do: "none", else: Enum.map_join(p.calls, " > ", &mfa/1))
        ]
      end

    Enum.join([Event.describe(e) | List.flatten(lines)], "\n")
  end

  def format(other), do: bad_cursor!(other)

  defp bad_cursor!(other) do
    Args.bad!("cursor", other, "an ElixirScope.Replay cursor (from ElixirScope.Replay.open/2)")
  end

  defp mfa(%Event{mfa: {m, f, a}}), do: "#{inspect(m)}.#{f}/#{a}"

  defp query(cursor, extra), do: Query.events([store: cursor.store] ++ cursor.filters ++ extra)

  defimpl Inspect do
    def inspect(%{event: %ElixirScope.Event{} = e}, _opts),
      do: "#ElixirScope.Replay<at #{ElixirScope.Event.describe(e)}>"

    def inspect(_r, _opts), do: "#ElixirScope.Replay<no event>"
  end
end
