defmodule ElixirScope.Query do
  @moduledoc """
  Ask what happened. Every filter runs natively over the store; only matching events are built
  as Elixir terms.

      ElixirScope.Query.events(kind: [:send, :receive], pid: pid, limit: 10)
      ElixirScope.Query.message_flow(client, server)
      ElixirScope.Query.function_calls(MyApp.Pricing, :total)

  Results are lists of `ElixirScope.Event` structs, oldest first unless `order: :desc`.

  ## Common options

  Every function takes the filters of `events/1` as its last argument, among them:

    * `:store` - the store to read (default: the current or last capture's, in memory, see
      `ElixirScope.Store.default/0`), or `:trace`: every event a running persisted capture
      wrote to its trace on disk, across its stores. A query only reads: what the capture
      has not written yet is in memory only (`ElixirScope.flush/0` writes it).
    * `:limit` - at most this many events (default `:infinity`).
    * `:order` - `:asc` (default, oldest first) or `:desc`.

  With no store at all, queries raise `ArgumentError`.
  """

  alias ElixirScope.{Args, Event, Native, Store}
  alias ElixirScope.Query.{Names, SourceDocs}

  # The documentation of the functions delegated to, shown here as it is there.
  for file <- ~w(history vars aggregate),
      do: @external_resource(Path.join(__DIR__, "query/#{file}.ex"))

  @docs Map.merge(
          SourceDocs.read(Path.join(__DIR__, "query/history.ex")),
          SourceDocs.read(Path.join(__DIR__, "query/vars.ex"))
        )
        |> Map.merge(SourceDocs.read(Path.join(__DIR__, "query/aggregate.ex")))

  @typedoc "A point in time: monotonic nanoseconds (an event's `ts`) or a `DateTime`."
  @type time :: integer() | DateTime.t()

  @typedoc "An MFA filter; `:_` is a wildcard."
  @type mfa_filter ::
          module()
          | {module(), atom() | :_}
          | {module() | :_, atom() | :_, arity() | :_}

  @typedoc "Options of `events/1`."
  @type filters :: [
          store: Store.t() | :trace,
          pid: pid() | [pid()],
          peer: pid() | [pid()],
          involving: pid() | [pid()],
          kind: Event.kind() | [Event.kind()],
          mfa: mfa_filter(),
          module: module(),
          since: time(),
          until: time(),
          after_seq: non_neg_integer(),
          before_seq: pos_integer(),
          limit: non_neg_integer() | :infinity,
          order: :asc | :desc
        ]

  @filter_defaults [
    store: nil,
    pid: [],
    peer: [],
    involving: [],
    kind: [],
    mfa: nil,
    module: nil,
    since: nil,
    until: nil,
    after_seq: 0,
    before_seq: nil,
    limit: :infinity,
    order: :asc,
    any: [],
    not: []
  ]

  # What a filter inside `any:` or `not:` may say.
  @sub_filter_defaults Keyword.drop(@filter_defaults, [
                         :store,
                         :after_seq,
                         :before_seq,
                         :limit,
                         :order
                       ])
  @max_sub_depth 8

  @doc """
  Events matching every given filter.

  ## Options

    * `:pid` - the process (or list of processes) the event happened in.
    * `:peer` - the other process of the event (message destination, spawned child, link peer).
    * `:involving` - events whose `pid` or `peer` is one of these processes.
    * `:kind` - a kind or list of kinds (see `ElixirScope.Event.kinds/0`).
    * `:mfa` - `Mod`, `{Mod, fun}` or `{Mod, fun, arity}`, with `:_` wildcards: calls, returns,
      exceptions and spawns of matching functions.
    * `:module` - short for `mfa: Mod` (ignored when `:mfa` is given).
    * `:since` / `:until` - time bounds, inclusive (monotonic ns or `DateTime`).
    * `:after_seq` / `:before_seq` - seq bounds, exclusive (for paging: pass the last seq seen).
    * `:limit` - default `:infinity`. `:order` - `:asc` (default) or `:desc`.
    * `:any` - a list of filters (keyword lists of the options above, without paging); the event
      must also match at least one of them.
    * `:not` - a filter, or a list of filters; the event must match none of them.
    * `:store` - the store to query.

  Options combine with *and*; `any:` and `not:` (which nest) give *or* and *not*, all evaluated
  natively:

      events(kind: :receive, any: [[pid: a], [pid: b]], not: [since: t1, until: t2])

  Invalid options raise `ArgumentError` naming the option and what is allowed.

  ## Examples

      iex> ElixirScope.Query.events(kind: :bogus, store: ElixirScope.Store.new!())
      ** (ArgumentError) invalid :kind :bogus, expected one of: :spawn, :exit, :link, :unlink, :register, :unregister, :send, :send_to_dead, :receive, :call, :return, :exception, :state, :supervisor, :var, :timeout, :traced, :metrics, :control, :stack
  """
  @spec events(filters()) :: [Event.t()]
  def events(filters \\ []) do
    {store, filter} = native_filter(filters)
    node = node()
    store |> Store.ref() |> Native.query_events(filter) |> Enum.map(&Event.from_native(&1, node))
  end

  @doc false
  # The options events/1 accepts.
  def filter_keys, do: Keyword.keys(@filter_defaults)

  @doc false
  # Validates `filters` (as for events/1) into the store and the filter map the NIFs decode
  # (`ElixirScope.Native`'s `FilterMap`: every key present, by name).
  @spec native_filter(filters()) :: {Store.t(), map()}
  def native_filter(filters) do
    opts = ElixirScope.Options.validate!(filters, @filter_defaults)
    store = store!(opts[:store])
    {store, filter_map(store, opts, 0)}
  end

  # The one builder of a native filter: `opts` are validated options of events/1 (or of a
  # filter inside `any:`/`not:`, at `depth`, which has no paging).
  defp filter_map(store, opts, depth) do
    {mod, fun, arity} = mfa!(opts[:mfa] || opts[:module])

    %{
      pids: pids!(store, opts[:pid], :pid),
      peers: pids!(store, opts[:peer], :peer),
      involving: pids!(store, opts[:involving], :involving),
      kinds: kinds!(opts[:kind]),
      module: mod,
      function: fun,
      arity: arity,
      since: time!(store, opts[:since], :since),
      until: time!(store, opts[:until], :until),
      after_seq: seq!(Keyword.get(opts, :after_seq, 0), :after_seq),
      before_seq: opt_seq!(opts[:before_seq]),
      descending: order!(Keyword.get(opts, :order, :asc)) == :desc,
      limit: limit!(Keyword.get(opts, :limit, :infinity)),
      any: sub_filters!(store, opts[:any], :any, depth + 1),
      none: sub_filters!(store, opts[:not], :not, depth + 1)
    }
  end

  # `any:` takes a list of filters; `not:` a filter or a list of filters.
  defp sub_filters!(_store, [], _key, _depth), do: []

  defp sub_filters!(_store, _subs, key, depth) when depth > @max_sub_depth,
    do: raise(ArgumentError, "#{inspect(key)} filters nest at most #{@max_sub_depth} deep")

  defp sub_filters!(store, subs, key, depth) when is_list(subs) do
    subs = if key == :not and Keyword.keyword?(subs), do: [subs], else: subs

    Enum.map(subs, fn
      sub when is_list(sub) ->
        filter_map(store, ElixirScope.Options.validate!(sub, @sub_filter_defaults), depth)

      other ->
        bad!(key, other, "a list of filters (keyword lists)")
    end)
  end

  defp sub_filters!(_store, other, key, _depth),
    do: bad!(key, other, "a list of filters (keyword lists)")

  @doc """
  Events whose contents match an Elixir pattern, with the values it binds. The pattern (and its
  guard) is compiled when the code compiles and matched natively against each stored payload;
  see `ElixirScope.Query.DSL` for what patterns and guards may contain.

      import ElixirScope.Query
      query kind: :receive, pid: pid, message: {:increment, n} when n > 5
      query module: Counter, state: %{count: c} when c in [1, 2, 3]
      query args: [^user_id | _], mfa: {Accounts, :fetch}

  Returns `[%{event: %ElixirScope.Event{}, binds: %{n: 7}}]`, oldest first.
  """
  @spec query(keyword()) :: Macro.t()
  defmacro query(opts), do: ElixirScope.Query.DSL.query_macro(opts, __CALLER__)

  @doc """
  Like `query/1` but at run time: the pattern may be a string (`message: "{:inc, n} when n >
  5"`), parsed and validated but never evaluated, and never creating atoms.
  """
  @spec find(keyword()) :: [ElixirScope.Query.DSL.match()]
  defdelegate find(filters), to: ElixirScope.Query.DSL

  @doc """
  The messages exchanged among `pids`, oldest first, as a sequence diagram draws them: sender,
  receiver, kind (`:call`, `:reply`, `:cast`, `:info`), the event and the seq of its receipt.
  See `ElixirScope.Query.Sequence.messages/2`.
  """
  @spec sequence([Names.process()], keyword()) :: [ElixirScope.Query.Sequence.message()]
  defdelegate sequence(pids, filters \\ []), to: ElixirScope.Query.Sequence, as: :messages

  @doc """
  What happened to `target` (a pid, a name, or `:all`) over `window` (`:all` or `{from, to}`),
  in a few sentences whose numbers all come from this module's queries. See
  `ElixirScope.Query.Summary.summarize/3`.
  """
  @spec summarize(Names.process() | :all, ElixirScope.Query.Summary.window(), keyword()) ::
          String.t()
  defdelegate summarize(target, window \\ :all, opts \\ []), to: ElixirScope.Query.Summary

  # Aggregations (see ElixirScope.Query.Aggregate).
  @doc Map.fetch!(@docs, {:count, 1})
  @spec count(keyword()) :: non_neg_integer()
  defdelegate count(filters \\ []), to: ElixirScope.Query.Aggregate

  @doc "A process's sampled metrics; see `ElixirScope.Query.Metrics.samples/2`."
  @spec metrics(pid() | atom(), keyword()) :: [ElixirScope.Query.Metrics.sample()]
  defdelegate metrics(target, filters \\ []), to: ElixirScope.Query.Metrics, as: :samples

  @doc "A process's mailbox length at `t`; see `ElixirScope.Query.Metrics.mailbox_at/3`."
  @spec mailbox_at(pid() | atom(), integer() | DateTime.t() | :now, keyword()) ::
          {:ok, ElixirScope.Query.Metrics.sample()} | {:error, :no_sample}
  defdelegate mailbox_at(target, t, opts \\ []), to: ElixirScope.Query.Metrics

  @doc "Processes by mailbox growth; see `ElixirScope.Query.Metrics.top_mailbox_growth/1`."
  @spec top_mailbox_growth(keyword()) :: [map()]
  defdelegate top_mailbox_growth(opts \\ []), to: ElixirScope.Query.Metrics
  @doc Map.fetch!(@docs, {:group_by, 2})
  @spec group_by(keyword(), ElixirScope.Query.Aggregate.key()) :: %{term() => pos_integer()}
  defdelegate group_by(filters, key), to: ElixirScope.Query.Aggregate
  @doc Map.fetch!(@docs, {:top, 3})
  @spec top(keyword(), ElixirScope.Query.Aggregate.key(), pos_integer()) :: [
          {term(), pos_integer()}
        ]
  defdelegate top(filters, key, n \\ 10), to: ElixirScope.Query.Aggregate
  @doc Map.fetch!(@docs, {:rate, 2})
  @spec rate(keyword(), pos_integer() | {pos_integer(), atom()}) :: [
          {integer(), non_neg_integer()}
        ]
  defdelegate rate(filters, bucket), to: ElixirScope.Query.Aggregate
  @doc Map.fetch!(@docs, {:durations, 2})
  @spec durations(keyword(), :all | ElixirScope.Query.Aggregate.key()) :: map() | nil
  defdelegate durations(filters, key \\ :all), to: ElixirScope.Query.Aggregate

  @doc """
  Everything that involves `pid`: events in it and events naming it as peer (its spawn, messages
  sent to it by traced processes, links).
  """
  @spec timeline(ElixirScope.Query.Names.process(), filters()) :: [Event.t()]
  def timeline(pid, filters \\ []) do
    pid = process!(pid, filters, "pid")
    events(Keyword.put(Args.opts!(filters), :involving, pid))
  end

  @doc """
  Prints the timeline of `target` (a process, as `timeline/2` takes it, or a list of events)
  for reading: one line per event with the time since the first, cut to the terminal's width
  (see `ElixirScope.Format.timeline/2`, which takes `format:` options given here).
  """
  @spec print_timeline(Names.process() | [Event.t()], keyword()) :: :ok
  def print_timeline(target, filters \\ []) do
    {format, filters} = Keyword.pop(Args.opts!(filters), :format, [])
    events = if is_list(target), do: target, else: timeline(target, filters)
    IO.puts(ElixirScope.Format.timeline(events, format))
  end

  @doc """
  Messages `pid` sent (`:send` and `:send_to_dead` events of `pid`).
  """
  @spec messages_from(ElixirScope.Query.Names.process(), filters()) :: [Event.t()]
  def messages_from(pid, filters \\ []),
    do:
      events(
        [pid: process!(pid, filters, "pid"), kind: [:send, :send_to_dead]] ++ Args.opts!(filters)
      )

  @doc """
  Messages that arrived in `pid`'s mailbox (`:receive` events of `pid`), from any sender, traced
  or not. The sender is not part of a receive event; `message_flow/3` pairs senders and receivers.
  """
  @spec messages_to(ElixirScope.Query.Names.process(), filters()) :: [Event.t()]
  def messages_to(pid, filters \\ []),
    do: events([pid: process!(pid, filters, "pid"), kind: :receive] ++ Args.opts!(filters))

  @doc """
  Messages `from` sent to `to` (`:send` events of `from` whose peer is `to`). Requires `from`
  to be traced.

  A GenServer's reply goes to an alias of the caller (a reference made by the call), not to
  its pid: a reply to a call that `to` made counts as sent to `to` (the alias is known from
  `to`'s `$gen_call`, traced as `to` sent it or as `from` received it), and its event's `peer`
  is `to` here (`data` is the reply message, `{[:alias | ref], reply}`), so flows are complete
  in both directions; so does a message sent to `to`'s registered name. The `:peer` and
  `:involving` filters of `events/1` resolve replies and names the same way when the caller is
  traced. (A paged trace, `ElixirScope.open/2` of a large directory, does not index whom such
  messages went to: there only sends to the pid itself are found.)
  """
  @spec message_flow(Names.process(), Names.process(), filters()) :: [Event.t()]
  def message_flow(from, to, filters \\ []) do
    from = process!(from, filters, "from")
    to = process!(to, filters, "to")
    {limit, filters} = Keyword.pop(Args.opts!(filters), :limit, :infinity)
    {order, filters} = Keyword.pop(filters, :order, :asc)
    limit = limit!(limit)
    order!(order)

    direct = events([pid: from, peer: to, kind: :send] ++ filters)

    # Replies to aliases of `to` whose calls the index could not see `to` make (`to` is not
    # traced): the aliases named by the calls `from` received from `to`.
    # (Through the message tag index: only `from`'s received calls are read.)
    calls =
      find(
        [pid: from, kind: :receive, message: ~s({:"$gen_call", _, _})] ++
          Keyword.take(filters, [:store])
      )

    aliases =
      for %{event: %Event{data: {:"$gen_call", {^to, [:alias | ref]}, _}}} <- calls,
          into: MapSet.new(),
          do: ref

    replies =
      if MapSet.size(aliases) == 0,
        do: [],
        else:
          Enum.filter(
            events([pid: from, kind: :send] ++ filters),
            &(is_reference(&1.peer) and MapSet.member?(aliases, &1.peer))
          )

    (direct ++ replies)
    |> Enum.uniq_by(& &1.seq)
    |> Enum.sort_by(& &1.seq, if(order == :desc, do: :desc, else: :asc))
    |> then(fn evs -> if limit == nil, do: evs, else: Enum.take(evs, limit) end)
    |> Enum.map(fn
      %Event{peer: peer} = e when is_reference(peer) -> %{e | peer: to}
      e -> e
    end)
  end

  @doc """
  Calls of `module.function` (any arity unless `:arity` is given), as `:call` events whose
  `data` is the argument list. Pass `kind: [:call, :return, :exception]` to get their outcomes
  too.
  """
  @spec function_calls(module(), atom(), filters()) :: [Event.t()]
  def function_calls(module, function, filters \\ []) do
    module = Args.module!(module, "module")
    function = Args.atom!(function, "function")
    {arity, filters} = Keyword.pop(Args.opts!(filters), :arity, :_)

    unless arity == :_ or (is_integer(arity) and arity in 0..255),
      do: bad!(:arity, arity, "an arity from 0 to 255 or :_")

    events([mfa: {module, function, arity}, kind: :call] ++ filters)
  end

  @doc "Calls of any function of `module`, as `:call` events."
  @spec module_function_calls(module(), filters()) :: [Event.t()]
  def module_function_calls(module, filters \\ []),
    do: events([mfa: Args.module!(module, "module"), kind: :call] ++ Args.opts!(filters))

  @doc "Events of `pid`, oldest first (`events(pid: pid)` with more filters)."
  @spec process_events(ElixirScope.Query.Names.process(), filters()) :: [Event.t()]
  def process_events(pid, filters \\ []),
    do: events([pid: process!(pid, filters, "pid")] ++ Args.opts!(filters))

  @doc """
  What a GenServer did: the messages it received, its callback calls and returns, its states and
  the messages it sent, oldest first.

  As in the seed, the second argument may be a callback name instead of filters:
  `genserver_events(pid, :handle_cast)` gives the calls, returns and exceptions of that
  callback and the states it produced.
  """
  @spec genserver_events(ElixirScope.Query.Names.process(), filters() | atom()) :: [Event.t()]
  def genserver_events(pid, filters \\ [])

  def genserver_events(pid, callback) when is_atom(callback) and callback not in [nil, []] do
    pid = process!(pid, [], "pid")

    events(pid: pid, kind: [:call, :return, :exception, :state])
    |> Enum.filter(&match?(%Event{mfa: {_, ^callback, _}}, &1))
  end

  def genserver_events(pid, filters) do
    kinds = [:receive, :call, :return, :exception, :state, :send]
    events([pid: process!(pid, filters, "pid"), kind: kinds] ++ Args.opts!(filters))
  end

  @doc """
  The events within `n` seqs before and after `event` (an event or a seq), it included: up to
  `2n + 1` events, fewer when other filters leave some of that window out.
  """
  @spec events_around_event(Event.t() | pos_integer(), non_neg_integer(), filters()) :: [
          Event.t()
        ]
  def events_around_event(event, n \\ 10, filters \\ []) do
    seq =
      case event do
        %Event{seq: seq} when is_integer(seq) and seq > 0 -> seq
        seq when is_integer(seq) and seq > 0 -> seq
        other -> bad!("event", other, "an ElixirScope.Event or a seq (a positive integer)")
      end

    n = Args.non_neg_integer!(n, "n")
    events([after_seq: max(seq - n - 1, 0), before_seq: seq + n + 1] ++ Args.opts!(filters))
  end

  @doc "Every recorded process spawn (`:spawn` events)."
  @spec process_spawns(filters()) :: [Event.t()]
  def process_spawns(filters \\ []), do: events([kind: :spawn] ++ Args.opts!(filters))

  @doc "Every recorded process exit (`:exit` events)."
  @spec process_exits(filters()) :: [Event.t()]
  def process_exits(filters \\ []), do: events([kind: :exit] ++ Args.opts!(filters))

  @doc "The traced calls of `pid` with their returns and exceptions, in order."
  @spec execution_path(ElixirScope.Query.Names.process(), filters()) :: [Event.t()]
  def execution_path(pid, filters \\ []) do
    kinds = [:call, :return, :exception]
    events([pid: process!(pid, filters, "pid"), kind: kinds] ++ Args.opts!(filters))
  end

  @doc """
  Events from `from` to `to` (inclusive; monotonic ns, `DateTime`, `{:seq, n}` or an event), with
  any other filters.
  """
  @spec execution_timeline(
          ElixirScope.Query.History.time(),
          ElixirScope.Query.History.time(),
          filters()
        ) ::
          [Event.t()]
  def execution_timeline(from, to, filters \\ [])

  # The seed's third argument: a list of kinds.
  def execution_timeline(from, to, [kind | _] = kinds) when is_atom(kind),
    do: execution_timeline(from, to, kind: kinds)

  def execution_timeline(from, to, filters) do
    filters = Args.opts!(filters)
    store = store!(Keyword.get(filters, :store))

    bounds =
      ElixirScope.Query.At.bound(store, :from, from) ++ ElixirScope.Query.At.bound(store, :to, to)

    events(bounds ++ Keyword.put(filters, :store, store))
  end

  # Time travel (see ElixirScope.Query.History for the details).
  alias ElixirScope.Query.History

  @doc Map.fetch!(@docs, {:state_at, 3})
  @spec state_at(ElixirScope.Query.Names.process(), History.time(), keyword()) ::
          {:ok, term()} | {:error, :no_state | :evicted}
  defdelegate state_at(pid, t, opts \\ []), to: History

  @doc """
  Seed-compatible `state_at/3`: `{:ok, state}`, or the seed's `{:error, :not_found}` where
  `state_at/3` says `{:error, :no_state}` (no state recorded at or before `t`), and
  `{:error, :evicted}` as `state_at/3` does.
  """
  @spec get_state_at(ElixirScope.Query.Names.process(), History.time(), keyword()) ::
          {:ok, term()} | {:error, :not_found | :evicted}
  def get_state_at(pid, t, opts \\ []) do
    case History.state_at(pid, t, opts) do
      {:error, :no_state} -> {:error, :not_found}
      other -> other
    end
  end

  @doc Map.fetch!(@docs, {:state_cause, 2})
  @spec state_cause(Event.t(), keyword()) :: Event.t() | nil
  defdelegate state_cause(state_event, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:state_timeline, 2})
  @spec state_timeline(ElixirScope.Query.Names.process(), keyword()) :: [Event.t()]
  defdelegate state_timeline(pid, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:state_evolution, 4})
  @spec state_evolution(
          ElixirScope.Query.Names.process(),
          History.time(),
          History.time(),
          keyword()
        ) :: [Event.t()]
  defdelegate state_evolution(pid, from, to, opts \\ []), to: History

  @doc @docs[{:state_changes_in_window, 3}] ||
         "See `ElixirScope.Query.History.state_changes_in_window/3`."
  @spec state_changes_in_window(
          pid() | History.time(),
          {History.time(), History.time()} | History.time(),
          keyword()
        ) :: [map()]
  defdelegate state_changes_in_window(pid_or_from, window_or_to, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:key_changes, 3})
  @spec key_changes(ElixirScope.Query.Names.process(), atom(), keyword()) :: [map()]
  defdelegate key_changes(pid, key, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:compare_states, 2})
  @spec compare_states(term(), term()) :: ElixirScope.StateDiff.t()
  defdelegate compare_states(a, b), to: History

  @doc @docs[{:pending_messages_at, 3}] ||
         "See `ElixirScope.Query.History.pending_messages_at/3`."
  @spec pending_messages_at(ElixirScope.Query.Names.process(), History.time(), keyword()) ::
          {:ok | :unknown, [Event.t()]}
  defdelegate pending_messages_at(pid, t, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:paired, 2})
  @spec paired(Event.t() | pos_integer() | {:seq, pos_integer()}, keyword()) ::
          {:ok, Event.t()} | {:error, :unpaired | :not_found | :not_indexed}
  defdelegate paired(event_or_seq, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:call_stack_at, 3})
  @spec call_stack_at(ElixirScope.Query.Names.process(), History.time(), keyword()) :: [Event.t()]
  defdelegate call_stack_at(pid, t, opts \\ []), to: History

  @doc @docs[{:active_processes_at, 2}] ||
         "See `ElixirScope.Query.History.active_processes_at/2`."
  @spec active_processes_at(History.time(), keyword()) :: [pid()]
  defdelegate active_processes_at(t, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:states_at, 2})
  @spec states_at(History.time(), keyword()) :: %{pid() => term()}
  defdelegate states_at(t, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:system_snapshot_at, 2})
  @spec system_snapshot_at(History.time(), keyword()) :: History.snapshot()
  defdelegate system_snapshot_at(t, opts \\ []), to: History

  @doc @docs[{:supervision_tree_at, 2}] ||
         "See `ElixirScope.Query.History.supervision_tree_at/2`."
  @spec supervision_tree_at(History.time(), keyword()) :: [map()]
  defdelegate supervision_tree_at(t, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:supervisor_events, 2})
  @spec supervisor_events(ElixirScope.Query.Names.process(), keyword()) :: [Event.t()]
  defdelegate supervisor_events(sup, opts \\ []), to: History
  @doc Map.fetch!(@docs, {:why_crashed, 2})
  @spec why_crashed(ElixirScope.Query.Names.process(), keyword()) ::
          {:ok, ElixirScope.Crash.t()} | {:error, :no_exit}
  defdelegate why_crashed(pid, opts \\ []), to: History

  # Variable tracking (see ElixirScope.Query.Vars and ElixirScope.Track).
  alias ElixirScope.Query.Vars

  @doc Map.fetch!(@docs, {:variables, 2})
  @spec variables(Vars.target(), keyword()) :: [Vars.binding()]
  defdelegate variables(target, opts \\ []), to: Vars
  @doc Map.fetch!(@docs, {:var_history, 3})
  @spec var_history(module() | mfa(), atom(), keyword()) :: [map()]
  defdelegate var_history(module, var, opts \\ []), to: Vars
  @doc Map.fetch!(@docs, {:source_view, 2})
  @spec source_view(Vars.target(), keyword()) :: String.t() | {:error, term()}
  defdelegate source_view(target, opts \\ []), to: Vars

  @doc Map.fetch!(@docs, {:source_lines, 2})
  @spec source_lines(Vars.target(), keyword()) :: {:ok, [map()]} | {:error, term()}
  defdelegate source_lines(target, opts \\ []), to: Vars
  @doc Map.fetch!(@docs, {:calls, 2})
  @spec tracked_calls(mfa() | module() | pid(), keyword()) :: [Event.t()]
  defdelegate tracked_calls(target, opts \\ []), to: Vars, as: :calls

  # Option checks: each raises an ArgumentError naming the option.

  @doc false
  def store!(%Store{} = s), do: s

  # The default store: the current (or last) capture's, in memory. Reading never writes.
  def store!(nil) do
    case Store.default() do
      nil ->
        raise ArgumentError, "no store: start a capture with ElixirScope.start/1 or pass :store"

      store ->
        store
    end
  end

  # A persisted capture's trace on disk: every event it wrote, across its stores.
  def store!(:trace) do
    with %Store{} = store <- Store.default(),
         {:ok, trace} <- ElixirScope.Persist.trace_store(store) do
      trace
    else
      _ ->
        raise ArgumentError,
              "store: :trace reads the trace a running capture persists (start it with " <>
                "persist: [dir: ...]), and there is none"
    end
  end

  def store!(other), do: Args.bad_store!(other, :store)

  defp pids!(_store, [], _key), do: []

  defp pids!(store, list, key) when is_list(list),
    do: Enum.map(list, &Names.resolve!(&1, store, key))

  defp pids!(store, one, key), do: [Names.resolve!(one, store, key)]

  # A process argument (a pid or a name, see ElixirScope.Query.Names), resolved in the store
  # the filters name.
  defp process!(target, filters, label) do
    Names.resolve!(target, fn -> store!(Keyword.get(Args.opts!(filters), :store)) end, label)
  end

  defp kinds!(kind) when is_atom(kind), do: kinds!([kind])

  defp kinds!(kinds) when is_list(kinds) do
    Enum.each(kinds, fn k ->
      unless k in Event.kinds() do
        bad!(:kind, k, "one of: " <> Enum.map_join(Event.kinds(), ", ", &inspect/1))
      end
    end)

    kinds
  end

  defp kinds!(other), do: bad!(:kind, other, "a kind or a list of kinds")

  defp mfa!(nil), do: {nil, nil, nil}
  defp mfa!(m) when is_atom(m) and m != :_, do: {m, nil, nil}
  defp mfa!({m, f}), do: mfa!({m, f, :_})

  defp mfa!({m, f, a} = mfa)
       when is_atom(m) and is_atom(f) and (a == :_ or (is_integer(a) and a in 0..255)) do
    {wild(m), wild(f), wild(a)}
    |> tap(fn _ -> if m == :_, do: bad!(:mfa, mfa, "a module, not :_, in first place") end)
  end

  defp mfa!(other), do: bad!(:mfa, other, "Mod, {Mod, fun} or {Mod, fun, arity} (with :_)")

  defp wild(:_), do: nil
  defp wild(x), do: x

  # Times and seqs beyond the NIFs' 64 bits are valid requests: clamped, they mean the same.
  defp time!(_store, nil, _key), do: nil
  defp time!(_store, t, _key) when is_integer(t), do: Args.i64(t)
  defp time!(store, %DateTime{} = dt, _key), do: Args.i64(Store.from_datetime(store, dt))
  defp time!(_store, other, key), do: bad!(key, other, "monotonic nanoseconds or a DateTime")

  defp seq!(n, _key) when is_integer(n) and n >= 0, do: Args.u64(n)
  defp seq!(other, key), do: bad!(key, other, "a non-negative integer")

  defp opt_seq!(nil), do: nil
  defp opt_seq!(n), do: seq!(n, :before_seq)

  defp order!(o) when o in [:asc, :desc], do: o
  defp order!(other), do: bad!(:order, other, ":asc or :desc")

  defp limit!(:infinity), do: nil
  defp limit!(n) when is_integer(n) and n >= 0, do: Args.limit(n)
  defp limit!(other), do: bad!(:limit, other, "a non-negative integer or :infinity")

  defp bad!(key, value, expected), do: Args.bad!(key, value, expected)
end
