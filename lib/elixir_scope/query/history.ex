defmodule ElixirScope.Query.History do
  @moduledoc """
  Time travel: what a process's state was, what waited in its mailbox, which calls were open,
  which processes were alive and how the supervision tree looked, at any past point — computed
  natively from per-process indexes, exactly.

  `ElixirScope.Query` delegates to these functions under the seed's names; call either.

  ## Points in time

  Every `t` accepts monotonic nanoseconds (an integer, as in an event's `ts`), a `DateTime`,
  `{:seq, n}` (just after the event with seq `n`), an `ElixirScope.Event` (just after it) or
  `:now`. An event is "at or before" a time when its `ts` is; a seq bound compares seqs.

  ## Processes

  Every `pid` argument may also be a registered name, `{:global, name}` or `{:via, module,
  name}`, resolved when the query runs (see `ElixirScope.Query.Names`).

  ## Options

  Every function takes `store:` (default: the current or last capture's store).

  ## State capture

  States come from `:state` events: ElixirScope return-traces the GenServer callbacks of traced
  GenServers, supervisors and agents and records the state in each result, plus a
  `:sys.get_state/2` snapshot when tracing starts (see `ElixirScope.trace/2`). An unchanged
  state is recorded without copying it again.
  """

  alias ElixirScope.{Args, Crash, Event, Native, Query, StateDiff, Store, Supervision}
  alias ElixirScope.Query.At

  @typedoc "A point in time, see the module docs."
  @type time :: integer() | DateTime.t() | {:seq, non_neg_integer()} | Event.t() | :now

  # The store of `opts`, which may hold `store:` and the options in `allowed` (any other key
  # raises ArgumentError naming the nearest allowed one).
  defp store(opts, allowed) do
    opts = ElixirScope.Options.validate!(opts, [store: nil] ++ Enum.map(allowed, &{&1, nil}))
    Query.store!(opts[:store])
  end

  defp decode(tuples), do: Enum.map(tuples, &Event.from_native(&1, node()))
  defp decode1(nil), do: nil
  defp decode1(tuple), do: Event.from_native(tuple, node())

  # A process argument: a pid or a name (see ElixirScope.Query.Names), resolved in `store`.
  defp pid!(pid, store, name \\ "pid"), do: ElixirScope.Query.Names.resolve!(pid, store, name)

  # The same for a question about the point `at`: a name is whoever held it then.
  defp pid_at!(pid, store, at), do: ElixirScope.Query.Names.resolve_at!(pid, store, "pid", at)

  @doc """
  The state `pid` had at `t`: `{:ok, state}`, or `{:error, :no_state}` when none was recorded
  at or before `t` (the process was not traced as a GenServer-like process then), or
  `{:error, :evicted}` when the store is a ring (`overflow: :evict_oldest`) that evicted events
  of `pid` (or all of them) and keeps no state of it at or before `t`: the state there was may
  be gone.

  ## Examples

      iex> ElixirScope.Query.History.state_at(self(), :now, store: ElixirScope.Store.new!())
      {:error, :no_state}
  """
  @spec state_at(ElixirScope.Query.Names.process(), time(), keyword()) ::
          {:ok, term()} | {:error, :no_state | :evicted}
  def state_at(pid, t, opts \\ []) do
    s = store(opts, [])
    at = At.native!(s, t)
    pid = pid_at!(pid, s, at)

    case state_event(s, pid, at) do
      %Event{data: data} ->
        {:ok, data}

      nil ->
        if Native.query_evicted(Store.ref(s), pid),
          do: {:error, :evicted},
          else: {:error, :no_state}
    end
  end

  @doc "The `:state` event of `pid` in force at `t`, or `nil`."
  @spec state_event_at(ElixirScope.Query.Names.process(), time(), keyword()) :: Event.t() | nil
  def state_event_at(pid, t, opts \\ []) do
    s = store(opts, [])
    at = At.native!(s, t)
    state_event(s, pid_at!(pid, s, at), at)
  end

  defp state_event(s, pid, at),
    do: s |> Store.ref() |> Native.query_state_at(pid, at) |> decode1()

  @doc """
  Where one key of a map (or struct) state changed: `[%{event: state_event, from: old, to:
  new}]`, oldest first, `:absent` standing for a key the state lacks (or a state too big to
  keep: see `ElixirScope.Event.Truncated`); in a ring-mode store, the first change kept of a
  process whose earlier states were evicted is `from: :evicted` (whether the key changed
  there is unknown). Served by a per-process, per-key index of change
  points, so a key that rarely changes in a busy process is cheap to follow.

  `key` is an atom: the index follows atom keys, the keys of structs and of most map states.
  Any other key raises `ArgumentError`.

  ## Options

    * `:since` / `:until` - a time window (any time form), both ends inclusive: unlike
      `state_timeline/2`'s `since`, an event given as `since:` is in it.
    * `:store` - the store to query.

  ## Examples

      iex> ElixirScope.Query.key_changes(self(), :count, store: ElixirScope.Store.new!())
      []
  """
  @spec key_changes(ElixirScope.Query.Names.process(), atom(), keyword()) :: [
          %{event: Event.t(), from: term() | :absent | :evicted, to: term() | :absent}
        ]
  def key_changes(pid, key, opts \\ []) do
    s = store(opts, [:since, :until])
    pid = pid!(pid, s)

    unless is_atom(key),
      do: Args.bad!("key", key, "an atom (only atom keys of map states are indexed)")

    events = s |> Store.ref() |> Native.query_key_changes(pid, Atom.to_string(key)) |> decode()

    from = At.opt_native!(s, opts[:since])
    to = At.opt_native!(s, opts[:until])

    first_before =
      case events do
        [%Event{seq: seq} | _] when seq > 1 ->
          case state_at(pid, {:seq, seq - 1}, opts) do
            {:ok, state} -> fetch(state, key)
            {:error, :evicted} -> :evicted
            _ -> :absent
          end

        _ ->
          :absent
      end

    {changes, _} =
      Enum.map_reduce(events, first_before, fn e, before ->
        now = fetch(e.data, key)
        {%{event: e, from: before, to: now}, now}
      end)

    # A state over the payload cap hides the key: from absent to absent is no change.
    Enum.filter(
      changes,
      &(not (&1.from == :absent and &1.to == :absent) and within?(&1.event, from, :since) and
          within?(&1.event, to, :until))
    )
  end

  # What a truncated (or undecodable) state held is unknown.
  defp fetch(%Event.Truncated{}, _key), do: :absent
  defp fetch(%Event.Undecodable{}, _key), do: :absent

  defp fetch(%{} = state, key) do
    case Map.fetch(state, key) do
      {:ok, v} -> v
      :error -> :absent
    end
  end

  defp fetch(_state, _key), do: :absent

  defp within?(_event, nil, _), do: true
  defp within?(%Event{ts: ts}, {:ts, t}, :since), do: ts >= t
  defp within?(%Event{ts: ts}, {:ts, t}, :until), do: ts <= t
  defp within?(%Event{seq: seq}, {:seq, s}, :since), do: seq >= s
  defp within?(%Event{seq: seq}, {:seq, s}, :until), do: seq <= s

  @doc """
  Every recorded state of `pid`, oldest first, as `:state` events (`data` is the state, `mfa`
  the callback that produced it).

  ## Options

    * `:changes_only` - leave out states equal to the previous one (default `true`).
    * `:since` / `:until` - bounds (`since` exclusive, `until` inclusive).
  """
  @spec state_timeline(ElixirScope.Query.Names.process(), keyword()) :: [Event.t()]
  def state_timeline(pid, opts \\ []) do
    s = store(opts, [:since, :until, :changes_only])
    from = At.opt_native!(s, opts[:since])
    to = At.opt_native!(s, opts[:until])
    changes = Args.boolean!(Keyword.get(opts, :changes_only, true), :changes_only)

    s
    |> Store.ref()
    |> Native.query_states(pid!(pid, s), from, to, changes)
    |> decode()
  end

  @doc """
  The callback call that produced a `:state` event (its `data` holds the callback's arguments,
  the message among them), or `nil` for a snapshot.
  """
  @spec state_cause(Event.t(), keyword()) :: Event.t() | nil
  def state_cause(%Event{kind: :state, mfa: {:sys, :get_state, _}}, _opts), do: nil

  def state_cause(%Event{kind: :state, pid: pid, mfa: mfa, seq: seq}, opts) when mfa != nil do
    opts
    |> Keyword.put(:store, store(opts, []))
    |> Keyword.merge(pid: pid, kind: :call, mfa: mfa, before_seq: seq, order: :desc, limit: 1)
    |> Query.events()
    |> List.first()
  end

  def state_cause(%Event{kind: :state}, _opts), do: nil

  def state_cause(other, _opts),
    do: Args.bad!("state_event", other, "a :state ElixirScope.Event")

  @doc """
  How `pid`'s state evolved from `from` to `to`: the state in force at `from` (if any) followed
  by every change after it up to `to`, as `:state` events.
  """
  @spec state_evolution(ElixirScope.Query.Names.process(), time(), time(), keyword()) :: [
          Event.t()
        ]
  def state_evolution(pid, from, to, opts \\ []) do
    first = state_event_at(pid, from, opts)
    List.wrap(first) ++ state_timeline(pid, Keyword.merge(opts, since: from, until: to))
  end

  @doc """
  The state changes of `pid` after `from` and up to `to`, each with its structural diff from the
  state before: `[%{event: Event.t(), diff: StateDiff.t()}]`.

  `state_changes_in_window(from, to)` (the seed's form, times instead of a pid and a window)
  gives the state changes of every process from `from` to `to` (inclusive), oldest first, each
  diffed against that process's state before it.
  """
  @spec state_changes_in_window(
          ElixirScope.Query.Names.process() | time(),
          {time(), time()} | time(),
          keyword()
        ) ::
          [%{event: Event.t(), diff: StateDiff.t()}]
  def state_changes_in_window(pid_or_from, window_or_to, opts \\ [])

  def state_changes_in_window(from, to, opts)
      when is_integer(from) or is_struct(from) or from == :now or
             (is_tuple(from) and elem(from, 0) == :seq) do
    s = store(opts, [])
    opts = Keyword.put(Args.opts!(opts), :store, s)
    bounds = At.bound(s, :from, from) ++ At.bound(s, :to, to)

    {diffs, _} =
      Query.events(Keyword.merge(opts, [kind: :state] ++ bounds))
      |> Enum.reject(&(&1.pid == nil))
      |> Enum.map_reduce(%{}, fn e, prev ->
        before =
          case Map.fetch(prev, e.pid) do
            {:ok, data} -> data
            :error -> before_data(e, opts)
          end

        {%{event: e, diff: compare_states(before, e.data)}, Map.put(prev, e.pid, e.data)}
      end)

    Enum.reject(diffs, &StateDiff.empty?(&1.diff))
  end

  def state_changes_in_window(pid, {from, to}, opts) do
    before = state_event_at(pid, from, opts)
    changes = state_timeline(pid, Keyword.merge(opts, since: from, until: to))

    {diffs, _} =
      Enum.map_reduce(changes, before && before.data, fn e, prev ->
        {%{event: e, diff: compare_states(prev, e.data)}, e.data}
      end)

    diffs
  end

  def state_changes_in_window(_pid, other, _opts),
    do: Args.bad!("window", other, "a {from, to} tuple of times")

  # The state `e`'s process had just before `e`.
  defp before_data(%Event{pid: pid, seq: seq}, opts) do
    case state_event_at(pid, {:seq, seq - 1}, opts) do
      %Event{data: data} -> data
      nil -> nil
    end
  end

  @doc """
  A structural diff of two states (or `:state` events): changed, added and removed paths (see
  `ElixirScope.StateDiff`), with the seed's keys too: `equal` (whether the states are the
  same) and the states compared, `before` and `after`.

  ## Examples

      iex> diff = ElixirScope.Query.History.compare_states(%{n: 1}, %{n: 2})
      iex> {diff.changed, diff.equal, diff.before, diff.after}
      {[{[:n], 1, 2}], false, %{n: 1}, %{n: 2}}
  """
  @spec compare_states(term(), term()) :: StateDiff.t()
  def compare_states(%Event{kind: :state, data: a}, b), do: compare_states(a, b)
  def compare_states(a, %Event{kind: :state, data: b}), do: compare_states(a, b)
  def compare_states(a, b), do: %{StateDiff.diff(a, b) | before: a, after: b}

  @doc """
  The messages in `pid`'s mailbox at `t`: sent to it and not yet consumed, oldest first.

  A message is in the mailbox from its send. When the sender is traced, the message is the
  sender's `:send` event, counted from the moment it was sent, even while the receiver is busy
  in a long callback (the VM's `:receive` trace event only marks when the process moves the
  message out of its signal queue, which a busy process does late). When the sender is not
  traced (or is a port, a timer, another node), the message is the receiver's `:receive`
  event, counted from then: for a busy receiver that is later than it really arrived. Sends
  and receives are paired exactly, see `paired/2`. (A trace opened paged, which
  `ElixirScope.open/2` does for a large trace directory, does not index whom a message went
  to: there every message counts from its `:receive`.) `:ok` says that consumption is known,
  not that every sender was traced: with untraced senders, trace them too (or `:all`) for
  arrivals as they happen. (Asking the VM for a process's messages, `Process.info(pid,
  :messages)`, moves them out of its signal queue: their `:receive` events are emitted then.)

  For a GenServer or a `:gen_statem` (its callbacks traced, as `ElixirScope.trace/2` does by
  default) consumption is known: a message leaves the mailbox when the callback whose argument
  it is starts (`handle_call/3`, `handle_cast/2`, `handle_info/2`, a state function or
  `handle_event/4`, outermost only); a reply received while a callback runs is taken at once by
  the call waiting for it; system messages are handled between callbacks. The answer is
  `{:ok, messages}`. One thing is learned late: a message a callback takes with its own
  `receive` is only known to be gone once the server takes a message received after it;
  until then it is listed. A message over the payload cap is matched on the bytes kept.

  For other processes ElixirScope cannot see when a message is taken out of the mailbox, and
  says so: `{:unknown, arrived}` lists every message sent to it (or received) up to `t`.
  `receive ... after` timeouts are not messages (they are `:timeout` events) and never listed.
  """
  @spec pending_messages_at(ElixirScope.Query.Names.process(), time(), keyword()) ::
          {:ok | :unknown, [Event.t()]}
  def pending_messages_at(pid, t, opts \\ []) do
    s = store(opts, [])
    at = At.native!(s, t)
    {known, msgs} = s |> Store.ref() |> Native.query_pending(pid_at!(pid, s, at), at)
    {if(known, do: :ok, else: :unknown), decode(msgs)}
  end

  @doc """
  The other half of a message: for a `:send` event to a local process, the `:receive` event in
  which the receiver took that message from its signal queue; for a `:receive` event, the
  `:send` event that sent it. `{:error, :unpaired}` when there is none: a message not received
  (yet), one from an untraced sender, or an event that is neither; `{:error, :not_found}` for
  a seq the store holds no event at. `{:error, :not_indexed}` on a paged trace, whose index
  does not say whom messages went to.

  Messages from one process to another arrive in the order they were sent, so the k-th
  `:receive` of a message pairs with the k-th unpaired `:send` of an equal message before it.
  Equal messages from different senders pair with the earliest send (the message is the same
  either way).

  ## Examples

      iex> ElixirScope.Query.History.paired(1, store: ElixirScope.Store.new!())
      {:error, :not_found}
  """
  @spec paired(Event.t() | pos_integer() | {:seq, pos_integer()}, keyword()) ::
          {:ok, Event.t()} | {:error, :unpaired | :not_found | :not_indexed}
  def paired(event_or_seq, opts \\ [])
  def paired(%Event{seq: seq}, opts), do: paired(seq, opts)
  def paired({:seq, seq}, opts), do: paired(seq, opts)

  def paired(seq, opts) when is_integer(seq) and seq > 0 do
    s = store(opts, [])
    ref = Store.ref(s)

    case Native.query_paired(ref, Args.u64(seq)) do
      nil ->
        cond do
          Query.events(store: s, after_seq: seq - 1, before_seq: Args.u64(seq + 1)) == [] ->
            {:error, :not_found}

          Native.query_inbox_complete(ref) ->
            {:error, :unpaired}

          true ->
            {:error, :not_indexed}
        end

      tuple ->
        {:ok, decode1(tuple)}
    end
  end

  def paired(other, _opts),
    do: Args.bad!(:event, other, "an ElixirScope.Event, a positive seq or {:seq, n}")

  @doc """
  The traced calls of `pid` open at `t`, outermost first (`:call` events).
  """
  @spec call_stack_at(ElixirScope.Query.Names.process(), time(), keyword()) :: [Event.t()]
  def call_stack_at(pid, t, opts \\ []) do
    s = store(opts, [])
    at = At.native!(s, t)
    s |> Store.ref() |> Native.query_call_stack(pid_at!(pid, s, at), at) |> decode()
  end

  @doc """
  The processes alive at `t`: seen (spawned, or with any recorded event) at or before `t` and not
  exited by then. Processes that did nothing traced before `t` are not known.
  """
  @spec active_processes_at(time(), keyword()) :: [pid()]
  def active_processes_at(t, opts \\ []) do
    s = store(opts, [])
    s |> Store.ref() |> Native.query_active(At.native!(s, t))
  end

  @doc """
  The state of every process alive at `t`, in one native pass: `%{pid => state | :unknown}`.
  """
  @spec states_at(time(), keyword()) :: %{pid() => term()}
  def states_at(t, opts \\ []) do
    s = store(opts, [])

    s
    |> Store.ref()
    |> Native.query_snapshot(At.native!(s, t))
    |> Map.new(fn
      {pid, nil} -> {pid, :unknown}
      {pid, tuple} -> {pid, Event.from_native(tuple, node()).data}
    end)
  end

  @typedoc "What `system_snapshot_at/2` answers."
  @type snapshot :: %{
          timestamp: integer() | nil,
          active_processes: [pid()],
          process_states: %{pid() => term()},
          pending_messages: %{pid() => [Event.t()]},
          supervision_tree: [map()],
          processes: %{
            pid() => %{
              state: term() | :unknown,
              pending: {:ok | :unknown, [Event.t()]},
              calls: [Event.t()]
            }
          }
        }

  @doc """
  The system at `t`, under the seed's keys:

    * `timestamp` - `t` as monotonic nanoseconds (for a seq, the time of that event; `nil`
      before any);
    * `active_processes` - the processes alive then (`active_processes_at/2`);
    * `process_states` - `%{pid => state}` for those whose state is recorded;
    * `pending_messages` - `%{pid => messages}` for those known to have messages waiting
      (`pending_messages_at/3`; a process whose consumption is unknown is only in
      `processes`, with `{:unknown, arrived}`);
    * `supervision_tree` - `supervision_tree_at/2`;
    * `processes` - for every process alive, `%{state: term | :unknown, pending: {:ok |
      :unknown, [Event.t()]}, calls: [Event.t()]}` (its open calls, `call_stack_at/3`).
  """
  @spec system_snapshot_at(time(), keyword()) :: snapshot()
  def system_snapshot_at(t, opts \\ []) do
    s = store(opts, [])
    at = at_time(At.native!(s, t))
    opts = Keyword.put(opts, :store, s)

    processes =
      Map.new(states_at(at, opts), fn {pid, state} -> {pid, process_at(pid, state, at, opts)} end)

    %{
      timestamp: native_ts(s, at),
      active_processes: processes |> Map.keys() |> Enum.sort(),
      process_states:
        for({pid, %{state: st}} <- processes, st != :unknown, into: %{}, do: {pid, st}),
      pending_messages:
        for({pid, %{pending: {:ok, [_ | _] = msgs}}} <- processes, into: %{}, do: {pid, msgs}),
      supervision_tree: supervision_tree_at(at, opts),
      processes: processes
    }
  end

  # The time of a point: itself, or for a seq the time of the last event at or before it.
  defp native_ts(_s, ts) when is_integer(ts), do: ts

  defp native_ts(s, {:seq, n}) do
    case Query.events(store: s, before_seq: Args.u64(n + 1), order: :desc, limit: 1) do
      [e] -> e.ts
      [] -> nil
    end
  end

  @doc false
  # One process at `t`, given its state there: what system_snapshot_at/2 (and a replay's view)
  # shows of it.
  def process_at(pid, state, t, opts) do
    %{
      state: state,
      pending: pending_messages_at(pid, t, opts),
      calls: call_stack_at(pid, t, opts)
    }
  end

  defp at_time({:seq, n}), do: {:seq, n}
  defp at_time({:ts, t}), do: t

  @doc """
  The supervision tree at `t`, rebuilt from the recorded states of traced supervisors: a list of
  root supervisors, each `%{pid: pid, id: term, children: [child]}`, where a child is
  `%{id: id, pid: pid, type: :worker | :supervisor, modules: modules}` and, when it is itself a
  traced supervisor, has `:children` too. Children are listed as `:supervisor.which_children/1`
  lists them.
  """
  @spec supervision_tree_at(time(), keyword()) :: [map()]
  def supervision_tree_at(t, opts \\ []) do
    s = store(opts, [])
    at = at_time(At.native!(s, t))
    opts = Keyword.put(opts, :store, s)
    alive = MapSet.new(active_processes_at(at, opts))

    sups =
      for pid <- supervisors(opts),
          pid in alive,
          {:ok, state} <- [state_at(pid, at, opts)],
          {:ok, children} <- [Supervision.children(state)],
          into: %{},
          do: {pid, children}

    child_pids = for {_, cs} <- sups, c <- cs, is_pid(c.pid), into: MapSet.new(), do: c.pid

    for {pid, _} <- sups, pid not in child_pids do
      %{pid: pid, id: nil, children: nest(sups[pid], sups)}
    end
  end

  defp nest(children, sups) do
    Enum.map(children, fn c ->
      case sups[c.pid] do
        nil -> c
        grandchildren -> Map.put(c, :children, nest(grandchildren, sups))
      end
    end)
  end

  @doc """
  What supervisor `sup` did to its children, derived from its recorded states, oldest first, as
  `:supervisor` events: `pid` is the supervisor, `peer` the child, `seq`/`ts` those of the state
  that shows the change, and `data` is `%{action: :started | :restarted | :terminated, id: id,
  pid: pid | :undefined, old_pid: pid | nil, reason: term | nil}` (`reason`: the old child's exit
  reason, when its exit was recorded).

  `:since` and `:until` (times as above, `{:seq, n}` included; both inclusive) select the changes
  whose state falls in the window; each is still found against the state before it, even when
  that state is older than the window.
  """
  @spec supervisor_events(ElixirScope.Query.Names.process(), keyword()) :: [Event.t()]
  def supervisor_events(sup, opts \\ []) do
    s = store(opts, [:since, :until, :changes_only])
    # The window selects changes, not states: a change is found against the state before it,
    # which may precede the window, and an old child's exit may too.
    from = At.opt_native!(s, opts[:since])
    to = At.opt_native!(s, opts[:until])
    opts = opts |> Keyword.drop([:since, :until]) |> Keyword.put(:store, s)

    sup
    |> pid!(s, "sup")
    |> state_timeline(opts)
    |> Enum.flat_map(fn e ->
      case Supervision.children(e.data) do
        {:ok, children} -> [{e, Map.new(children, &{key(&1), &1})}]
        :error -> []
      end
    end)
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.filter(fn [_, {e, _}] -> within?(e, from, :since) and within?(e, to, :until) end)
    |> Enum.flat_map(fn [{_, old}, {e, new}] -> child_changes(old, new, e, opts) end)
    |> Enum.map(fn %{seq: seq, ts: ts} = change ->
      data = Map.drop(change, [:seq, :ts])
      peer = if is_pid(data.pid), do: data.pid, else: data.old_pid

      %Event{seq: seq, ts: ts, kind: :supervisor, pid: sup, peer: peer, data: data, node: node()}
    end)
  end

  # Children are keyed by id, or by pid under a DynamicSupervisor (ids are all :undefined).
  defp key(%{id: :undefined, pid: pid}), do: {:pid, pid}
  defp key(%{id: id}), do: {:id, id}

  defp child_changes(old, new, e, opts) do
    at = %{seq: e.seq, ts: e.ts}

    changed =
      for {k, c} <- new, o = old[k], o.pid != c.pid do
        cond do
          is_pid(o.pid) and is_pid(c.pid) ->
            Map.merge(at, %{
              action: :restarted,
              id: c.id,
              pid: c.pid,
              old_pid: o.pid,
              reason: exit_reason(o.pid, opts)
            })

          is_pid(c.pid) ->
            Map.merge(at, %{action: :started, id: c.id, pid: c.pid, old_pid: nil, reason: nil})

          is_pid(o.pid) ->
            Map.merge(at, %{
              action: :terminated,
              id: c.id,
              pid: c.pid,
              old_pid: o.pid,
              reason: exit_reason(o.pid, opts)
            })

          true ->
            nil
        end
      end

    started =
      for {k, c} <- new,
          not Map.has_key?(old, k),
          do: Map.merge(at, %{action: :started, id: c.id, pid: c.pid, old_pid: nil, reason: nil})

    gone =
      for {k, o} <- old,
          not Map.has_key?(new, k),
          do:
            Map.merge(at, %{
              action: :terminated,
              id: o.id,
              pid: :undefined,
              old_pid: o.pid,
              reason: exit_reason(o.pid, opts)
            })

    Enum.reject(changed, &is_nil/1) ++ started ++ gone
  end

  defp exit_reason(pid, opts) when is_pid(pid) do
    case Query.events(Keyword.merge(opts, pid: pid, kind: :exit, limit: 1)) do
      [e] -> e.data
      [] -> nil
    end
  end

  defp exit_reason(_, _), do: nil

  # Processes with a supervisor-shaped state anywhere in the capture.
  defp supervisors(opts) do
    shapes = [
      [mfa: {:supervisor, :_, :_}],
      [mfa: {:sys, :get_state, 2}],
      [mfa: DynamicSupervisor]
    ]

    Query.events(Keyword.merge(opts, kind: :state, any: shapes))
    |> Enum.filter(&match?({:ok, _}, Supervision.children(&1.data)))
    |> Enum.map(& &1.pid)
    |> Enum.uniq()
  end

  @doc """
  Why `pid` died: `{:ok, %ElixirScope.Crash{}}` with the exit reason (exception and stacktrace
  split out), the exceptions it raised through traced calls, the last `:last` (default 5)
  messages it received before failing, its state before the exit and its linked processes and
  how they exited; `{:error, :no_exit}` when no exit of `pid` was recorded.
  `ElixirScope.Crash.format/1` renders it.

  A process taken down by a linked process's exit signal (it exited abnormally with the reason a
  linked process exited with just before) did not fail itself: `exit_signal_from` names that
  process, `cause` is its own report (following the chain to the process that really failed),
  and the exception and stacktrace of the reason are left to it, not reported as this one's.
  """
  @spec why_crashed(ElixirScope.Query.Names.process(), keyword()) ::
          {:ok, Crash.t()} | {:error, :no_exit}
  def why_crashed(pid, opts \\ []) do
    {n, opts} = Keyword.pop(Args.opts!(opts), :last, 5)
    n = Args.non_neg_integer!(n, :last)
    opts = Keyword.put(opts, :store, store(opts, []))

    pid =
      ElixirScope.Query.Names.resolve_exited!(
        pid,
        opts[:store],
        "pid",
        &(last_exit(&1, opts) != nil)
      )

    case last_exit(pid, opts) do
      nil -> {:error, :no_exit}
      exit -> {:ok, crash(pid, exit, n, opts, [pid])}
    end
  end

  # How many linked processes a report follows back, at most.
  @max_chain 16

  defp last_exit(pid, opts) do
    case Query.events(Keyword.merge(opts, pid: pid, kind: :exit, order: :desc, limit: 1)) do
      [] -> nil
      [exit] -> exit
    end
  end

  defp normal_exit?(reason), do: reason in [:normal, :shutdown] or match?({:shutdown, _}, reason)

  defp crash(pid, exit, n, opts, seen) do
    linked = linked(pid, exit, opts)
    signal = exit_signal(exit, linked) || inferred_exit_signal(pid, exit, opts)

    {exception, stacktrace} = if signal, do: {nil, nil}, else: Crash.split_reason(exit.data)

    # The exceptions on its way out, innermost first: the last chain of exception events,
    # looking back past at most a few calls made while dying (terminate/2), and only for an
    # abnormal exit of its own (a normal one did not die of an exception, even one it caught
    # long ago; one killed by an exit signal did not raise).
    raised =
      if normal_exit?(exit.data) or signal != nil do
        []
      else
        Query.events(
          Keyword.merge(opts,
            pid: pid,
            kind: [:exception, :call, :return],
            before_seq: exit.seq,
            order: :desc,
            limit: 64
          )
        )
        |> Enum.drop_while(&(&1.kind != :exception))
        |> Enum.take_while(&(&1.kind == :exception))
        |> Enum.reverse()
      end

    # The messages that led up to it: received before the failure started (the innermost
    # exception, or the exit), not the replies a dying process gets while reporting.
    cutoff = if raised == [], do: exit.seq, else: hd(raised).seq

    messages =
      Query.events(
        Keyword.merge(opts, pid: pid, kind: :receive, before_seq: cutoff, order: :desc, limit: n)
      )
      |> Enum.reverse()

    state =
      case state_at(pid, {:seq, exit.seq}, opts) do
        {:ok, st} -> st
        _ -> :unknown
      end

    cause =
      if signal != nil and signal.pid not in seen and length(seen) < @max_chain,
        do: crash(signal.pid, signal.exit, n, opts, [signal.pid | seen])

    %Crash{
      pid: pid,
      reason: exit.data,
      exception: exception,
      stacktrace: stacktrace,
      exit: exit,
      raised: raised,
      last_messages: messages,
      state: state,
      linked: Enum.map(linked, &Map.delete(&1, :event)),
      exit_signal_from: signal && signal.pid,
      exit_signal_inferred: signal != nil and Map.get(signal, :inferred, false),
      cause: cause
    }
  end

  # The linked process whose exit signal took this one down: it exited (abnormally) before
  # this one, with the reason this one exited with; the latest such, if several did.
  defp exit_signal(%Event{data: reason} = exit, linked) do
    if reason != :normal do
      linked
      |> Enum.filter(&(&1.event && &1.event.seq < exit.seq and &1.exit == reason))
      |> Enum.max_by(& &1.event.seq, fn -> nil end)
      |> case do
        nil -> nil
        l -> %{pid: l.pid, exit: l.event}
      end
    end
  end

  # Without a traced link (one made before tracing): a process that exited just before with
  # this very reason, when the reason carries a stacktrace (an exception's, identical down to
  # its frames, is not a coincidence; bare reasons like :shutdown or :killed could be).
  defp inferred_exit_signal(pid, %Event{data: reason} = exit, opts) do
    if Crash.split_reason(reason) != {nil, nil} and
         Query.events(
           Keyword.merge(opts, pid: pid, kind: :exception, before_seq: exit.seq, limit: 1)
         ) ==
           [] do
      Query.events(
        Keyword.merge(opts, kind: :exit, before_seq: exit.seq, order: :desc, limit: 64)
      )
      |> Enum.find(&(&1.pid != pid and &1.data == reason))
      |> case do
        nil -> nil
        e -> %{pid: e.pid, exit: e, inferred: true}
      end
    end
  end

  # Links recorded up to the exit (from either side), minus unlinks, and how each peer exited
  # (before or after this process), or `:alive_or_unknown`.
  defp linked(pid, exit, opts) do
    Query.events(
      Keyword.merge(opts, involving: pid, kind: [:link, :unlink], before_seq: exit.seq)
    )
    |> Enum.reduce(MapSet.new(), fn e, acc ->
      other = if e.pid == pid, do: e.peer, else: e.pid
      if e.kind == :link, do: MapSet.put(acc, other), else: MapSet.delete(acc, other)
    end)
    |> Enum.filter(&is_pid/1)
    |> Enum.sort()
    |> Enum.map(fn other ->
      case last_exit(other, opts) do
        %Event{} = e -> %{pid: other, exit: e.data, event: e}
        nil -> %{pid: other, exit: :alive_or_unknown, event: nil}
      end
    end)
  end
end
