defmodule ElixirScope.UI.API do
  @moduledoc """
  The UI's JSON API: each route a thin call of the public query API that IEx uses, so the page
  and IEx always give the same answer. `handle/4` takes the request and gives
  `{status, body}`, `body` a map ready for `ElixirScope.UI.JSON.encode!/1`; errors are
  `{4xx, %{error: message}}` with the message the API raised (a bad pattern shows the parser's
  message), never a crash.

  Routes (all `GET` but `control`):

    * `status` - the capture's counters, level, sampling and targets (`ElixirScope.status/0`,
      or the trace's `ElixirScope.Store.stats/1`);
    * `events` - a page of events (`ElixirScope.Query.events/1`, or `ElixirScope.Query.find/1`
      with `pattern_key` and `pattern`): `after_seq`, `before_seq`, `limit` (1..1000, default
      100), `order`, `kind` (comma-separated), `pid`. `scanned_to` says how far the page
      looked: a tail polls from there (`after_seq`), so a filter that matches nothing does not
      rescan the store;
    * `processes` - the processes with the most events (`limit`, default 500, up to 5000; `total`
      says how many have events), each with its registered name and event count, and for a
      live local one whether it is alive and its mailbox length;
    * `process` - one process (`pid`): its counts by kind and its received messages by tag;
    * `timeline` - a page of the events involving a process (`pid`, paging as `events`);
    * `flow` - the messages among processes (`pids`, comma-separated; default the busiest),
      paged by seq (`after_seq`, `limit` up to 1000, default 200): lifelines and arrows as
      `ElixirScope.Query.sequence/2` gives them, each with a short label (the message itself
      is one `events` page away, `after_seq=seq-1&limit=1`);
    * `tree` - the supervision tree at a seq (`at`, default now) and the changes since `from`;
    * `replay` - one step of an `ElixirScope.Replay` cursor (`seq`, or `time` in ISO 8601; `step`: `here`, `next`,
      `prev`, `start`, `end` or `until` a pattern), with the involved processes' states,
      mailboxes and call stacks;
    * `crashes` - abnormal exits with `ElixirScope.Query.why_crashed/2`'s report;
    * `calls`, `call` - tracked calls, and one call's source with its recorded values;
    * `states` - a page of a process's states (`pid`, paging as `events`), each with its diff
      from the state before it and its numeric fields;
    * `POST control` - `{"action": "start"}` (a new capture, default options), `{"action":
      "stop"}`, `{"action": "trace" | "untrace", "target": "#PID<0.1.0>" | "MyApp.Server" |
      "all"}` (a pid, or the name of an existing process or module: no atom is made),
      `{"action": "level", "level": "messages_only"}`, `{"action": "sampling", "rate": 0.5}`:
      a live UI only.

  ## Examples

      iex> store = ElixirScope.Store.new!()
      iex> {200, %{events: []}} = ElixirScope.UI.API.handle(:get, "events", %{}, %{store: store})
      iex> ElixirScope.UI.API.handle(:get, "events", %{"limit" => "0"}, %{store: store})
      {400, %{error: "invalid limit \\"0\\": expected an integer from 1 to 1000"}}
  """

  alias ElixirScope.{Event, Query, StateDiff, Store}
  alias ElixirScope.Query.Aggregate
  alias ElixirScope.UI.View

  @max_limit 1000
  @max_lifelines 32
  @max_pending 50
  @routes ~w(status events processes process timeline states flow tree replay crashes calls call control)
  @kinds Map.new(Event.kinds(), &{Atom.to_string(&1), &1})
  @levels Map.new(~w(full messages_only states_only minimal off)a, &{Atom.to_string(&1), &1})
  @pattern_keys Map.new(~w(message args result state data)a, &{Atom.to_string(&1), &1})

  @typedoc """
  Where the API reads: `store` is a store, or `:default` for the running capture's current one;
  `live` says whether control actions apply.
  """
  @type context :: %{required(:store) => Store.t() | :default, optional(:live) => boolean()}

  @doc """
  Answers one request: `method` (`:get` or `:post`), the route (the path after `/api/`), the
  query's parameters (or the decoded JSON body of a POST) and the context.
  """
  @spec handle(:get | :post, String.t(), map(), context()) :: {pos_integer(), map()}
  def handle(method, route, params, ctx) do
    case {method, route} do
      {:get, "status"} ->
        with_store(ctx, &status(&1, ctx))

      {:get, "events"} ->
        with_store(ctx, &events(&1, params, ctx))

      {:get, "processes"} ->
        with_store(ctx, &processes(&1, params, ctx))

      {:get, "process"} ->
        with_store(ctx, &process(&1, params, ctx))

      {:get, "timeline"} ->
        with_store(ctx, &timeline(&1, params, ctx))

      {:get, "states"} ->
        with_store(ctx, &states(&1, params))

      {:get, "flow"} ->
        with_store(ctx, &flow(&1, params, ctx))

      {:get, "tree"} ->
        with_store(ctx, &tree(&1, params, ctx))

      {:get, "replay"} ->
        with_store(ctx, &replay(&1, params, ctx))

      {:get, "crashes"} ->
        with_store(ctx, &crashes(&1, params, ctx))

      {:get, "calls"} ->
        with_store(ctx, &calls(&1, params))

      {:get, "call"} ->
        with_store(ctx, &call(&1, params))

      {:post, "control"} ->
        control(params, ctx)

      {_, r} when r in @routes ->
        {405, err("method not allowed")}

      _ ->
        {404, err("no such route: /api/#{route}")}
    end
  rescue
    e in ArgumentError -> {400, err(Exception.message(e))}
  end

  defp with_store(ctx, fun) do
    case store(ctx) do
      nil -> {503, err("no capture yet: start one with ElixirScope.start/1")}
      store -> {200, fun.(store)}
    end
  end

  defp store(%{store: :default}), do: Store.default()
  defp store(%{store: %Store{} = store}), do: store

  defp live?(ctx), do: Map.get(ctx, :live, false)

  # status

  defp status(store, ctx) do
    stats = if live?(ctx), do: ElixirScope.status(), else: Store.stats(store)
    traced = Map.get(stats, :traced, %{})

    %{
      mode: if(live?(ctx), do: "live", else: "trace"),
      running: Map.get(stats, :running, false),
      events: stats.events,
      last_seq: stats.last_seq,
      published_seq: stats.published_seq,
      dropped: stats.dropped,
      truncated: stats.truncated,
      bytes: stats.bytes,
      capacity: stats.capacity,
      tracing_level: stats.tracing_level,
      sample_rate: stats.sample_rate,
      sample_by: stats.sample_by,
      persist_dir: Map.get(stats, :persist_dir),
      traced: %{
        pids: Enum.map(Map.get(traced, :pids, []), &View.pid/1),
        all: Map.get(traced, :all, false),
        new: Map.get(traced, :new, false),
        modules: Enum.map(Map.get(traced, :modules, []), &inspect/1)
      },
      skipped: length(Map.get(stats, :skipped, []))
    }
  end

  # events

  defp events(store, params, ctx) do
    filters = [store: store] ++ page!(params) ++ kinds!(params) ++ pid_filter!(params, :pid)
    # Read before the query, which sees at least every event up to it.
    published = Store.stats(store).published_seq

    events =
      case pattern!(params) do
        nil -> Query.events(filters)
        {key, text} -> Query.find([{key, text} | filters]) |> Enum.map(& &1.event)
      end

    # How far a tail has looked: with a short ascending page, every matching event up to
    # `published` is in it, so the next poll starts there even when nothing matched.
    whole = length(events) < filters[:limit] and filters[:order] == :asc and !filters[:before_seq]
    last = events |> List.last() |> seq()
    scanned = if whole, do: max(published, last || 0), else: last

    Map.put(page(events, store, ctx), :scanned_to, scanned)
  end

  defp page(events, store, ctx) do
    pids = events |> Enum.flat_map(&[&1.pid, &1.peer]) |> Enum.filter(&is_pid/1) |> Enum.uniq()

    %{
      events: View.events(events, store, names(store, ctx, pids)),
      first_seq: events |> List.first() |> seq(),
      last_seq: events |> List.last() |> seq()
    }
  end

  defp seq(nil), do: nil
  defp seq(%Event{seq: seq}), do: seq

  # processes

  defp processes(store, params, ctx) do
    limit = int!(params, "limit", 500, 1, 5000)
    all = Aggregate.per_process(store: store) |> Map.drop(own(ctx))
    # The busiest first, at most `limit` of them: a node of a million processes is one page.
    counts =
      all
      |> Enum.filter(fn {pid, _} -> is_pid(pid) end)
      |> Enum.sort_by(fn {_, n} -> -n end)
      |> Enum.take(limit)

    names = names(store, ctx, Enum.map(counts, &elem(&1, 0)))

    list =
      for {pid, count} <- counts do
        alive = live?(ctx) and node(pid) == node() and Process.alive?(pid)

        %{
          pid: View.pid(pid),
          name: if(n = Map.get(names, pid), do: inspect(n)),
          events: count,
          alive: alive,
          mailbox: if(alive, do: mailbox(pid))
        }
      end

    %{processes: list, total: Enum.count(all, fn {pid, _} -> is_pid(pid) end)}
  end

  # Registered names: those the trace saw taken (`:register`, `:traced`, the last one wins), and
  # for a live capture the name a local process holds now (a saved trace's pids are another
  # VM's: never looked up here).
  defp names(store, ctx, pids) do
    # A page's few processes: through their index lists; many: one pass over the capture.
    by_pid = if length(pids) in 1..256, do: [pid: pids], else: []

    # The name each process last took (kept after it gave it up or exited: the events shown
    # are from when it held it; the page shows the pid beside it).
    seen =
      for %Event{kind: kind, pid: pid, data: data} <-
            Query.events([store: store, kind: [:register, :traced]] ++ by_pid),
          name = name_in(kind, data),
          into: %{},
          do: {pid, name}

    if live?(ctx) do
      Enum.reduce(pids, seen, fn pid, acc ->
        case node(pid) == node() && Process.info(pid, :registered_name) do
          {:registered_name, name} when is_atom(name) -> Map.put(acc, pid, name)
          _ -> acc
        end
      end)
    else
      seen
    end
  end

  defp name_in(:register, name) when is_atom(name), do: name
  defp name_in(:traced, {_, name}) when is_atom(name) and name != nil, do: name
  defp name_in(_, _), do: nil

  defp mailbox(pid) do
    case Process.info(pid, :message_queue_len) do
      {:message_queue_len, n} -> n
      nil -> nil
    end
  end

  defp process(store, params, ctx) do
    pid = pid!(params, "pid")
    by_kind = Aggregate.group_by([store: store, pid: pid], :kind)
    tags = Aggregate.group_by([store: store, pid: pid, kind: :receive], :tag)
    alive = live?(ctx) and node(pid) == node() and Process.alive?(pid)

    %{
      pid: View.pid(pid),
      name: if(n = Map.get(names(store, ctx, [pid]), pid), do: inspect(n)),
      alive: alive,
      mailbox: if(alive, do: mailbox(pid)),
      by_kind: Map.new(by_kind, fn {k, n} -> {Atom.to_string(k), n} end),
      received_by_tag:
        tags
        |> Enum.sort_by(fn {_, n} -> -n end)
        |> Enum.map(fn {tag, n} -> %{tag: inspect(tag), count: n} end)
    }
  end

  # a process's timeline and states

  defp timeline(store, params, ctx) do
    pid = pid!(params, "pid")
    filters = [store: store] ++ page!(params) ++ kinds!(params)
    page(Query.timeline(pid, filters), store, ctx)
  end

  defp states(store, params) do
    pid = pid!(params, "pid")
    states = Query.events([store: store, pid: pid, kind: :state] ++ page!(params))

    previous =
      case states do
        [first | _] ->
          Query.events(
            store: store,
            pid: pid,
            kind: :state,
            before_seq: first.seq,
            order: :desc,
            limit: 1
          )

        [] ->
          []
      end

    {entries, _} =
      Enum.map_reduce(states, List.first(previous), fn e, before ->
        {state_entry(e, before, store), e}
      end)

    %{states: entries, last_seq: states |> List.last() |> seq()}
  end

  defp state_entry(%Event{} = e, before, store) do
    diff = if before, do: StateDiff.diff(before.data, e.data)

    %{
      seq: e.seq,
      ts: e.ts,
      time: View.time(store, e.ts),
      callback: View.mfa(e.mfa),
      state: View.term(e.data),
      numbers: numbers(e.data),
      diff: diff && diff_json(diff)
    }
  end

  defp diff_json(%StateDiff{} = d) do
    %{
      equal: d.equal,
      changed:
        for(
          {path, old, new} <- d.changed,
          do: %{path: path_text(path), before: View.term(old), after: View.term(new)}
        ),
      added: for({path, v} <- d.added, do: %{path: path_text(path), value: View.term(v)}),
      removed: for({path, v} <- d.removed, do: %{path: path_text(path), value: View.term(v)})
    }
  end

  defp path_text(path), do: Enum.map_join(path, "", &"[#{inspect(&1)}]")

  # The numeric fields a chart can draw: the state itself, or a map's (a struct's) top-level
  # numeric values, by their key as text.
  defp numbers(n) when is_number(n), do: if(chartable?(n), do: %{"state" => n}, else: %{})

  defp numbers(%{} = map) do
    for {k, v} <- Map.delete(map, :__struct__), chartable?(v), into: %{}, do: {inspect(k), v}
  end

  defp numbers(_), do: %{}

  # A number a page can draw exactly: a float, or an integer JavaScript holds without loss.
  defp chartable?(v) when is_float(v), do: true
  defp chartable?(v) when is_integer(v), do: abs(v) <= 9_007_199_254_740_991
  defp chartable?(_), do: false

  # message flow

  defp flow(store, params, ctx) do
    pids =
      case params["pids"] do
        blank when blank in [nil, ""] ->
          Aggregate.top([store: store], :pid, 12)
          |> Enum.map(&elem(&1, 0))
          |> Enum.filter(&(is_pid(&1) and &1 not in own(ctx)))
          |> Enum.take(6)

        text ->
          pids =
            text
            |> String.split(",", trim: true)
            |> Enum.map(&pid!(%{"pids" => String.trim(&1)}, "pids"))
            |> Enum.uniq()

          if length(pids) > @max_lifelines,
            do: raise(ArgumentError, "invalid pids: at most #{@max_lifelines} processes")

          pids
      end

    page = page!(Map.put_new(params, "limit", "200"))

    window =
      [store: store, after_seq: page[:after_seq], limit: page[:limit]] ++
        Keyword.take(page, [:before_seq])

    messages = if pids == [], do: [], else: Query.sequence(pids, window)
    names = names(store, ctx, pids)

    %{
      lifelines: Enum.map(pids, &%{pid: View.pid(&1), name: name(names, &1)}),
      messages:
        Enum.map(messages, fn m ->
          %{
            seq: m.seq,
            time: View.time(store, m.ts),
            from: View.pid(m.from),
            to: View.pid(m.to),
            kind: m.kind,
            received_seq: m.received_seq,
            label: message_label(m.kind, m.event.data)
          }
        end),
      last_seq: messages |> List.last() |> then(&(&1 && &1.seq))
    }
  end

  defp name(names, pid), do: if(n = Map.get(names, pid), do: inspect(n))

  # What an arrow says: a call's request, a reply's value, a cast's message, a message.
  defp message_label(:call, {:"$gen_call", _, request}), do: short(request)
  defp message_label(:cast, {:"$gen_cast", message}), do: short(message)
  defp message_label(:reply, {_, value}), do: short(value)
  defp message_label(_, data), do: short(data)

  defp short(term), do: inspect(term, limit: 6, printable_limit: 60)

  # supervision tree

  defp tree(store, params, ctx) do
    stats = Store.stats(store)
    at = int!(params, "at", stats.published_seq, 1, nil)
    from = int!(params, "from", nil, 1, nil)
    roots = Query.supervision_tree_at({:seq, at}, store: store) |> without(own(ctx))
    sups = supervisors(roots)
    names = names(store, ctx, sups ++ child_pids(roots))

    changes =
      if from do
        {lo, hi} = {min(from, at), max(from, at)}

        for sup <- sups,
            e <- Query.supervisor_events(sup, store: store, since: {:seq, lo}, until: {:seq, hi}) do
          %{
            seq: e.seq,
            supervisor: View.pid(sup),
            action: e.data.action,
            id: inspect(e.data.id),
            pid: if(is_pid(e.data.pid), do: View.pid(e.data.pid)),
            old_pid: View.pid(e.data.old_pid),
            reason: if(e.data.reason, do: View.term(e.data.reason))
          }
        end
        |> Enum.sort_by(& &1.seq)
      else
        []
      end

    %{
      at: at,
      from: from,
      first_seq: max(stats.last_seq - stats.events + 1, 1),
      last_seq: stats.published_seq,
      roots: Enum.map(roots, &node_json(&1, names)),
      changes: changes
    }
  end

  # The tree without the UI's own server processes.
  defp without(nodes, []), do: nodes

  defp without(nodes, own) do
    for n <- nodes, n.pid not in own do
      if Map.has_key?(n, :children), do: %{n | children: without(n.children, own)}, else: n
    end
  end

  # A live UI leaves its own server's processes out of its lists (they are not the app's; see
  # `ElixirScope.UI.own_processes/0`).
  defp own(ctx), do: if(live?(ctx), do: ElixirScope.UI.own_processes(), else: [])

  defp supervisors(nodes) do
    Enum.flat_map(nodes, fn n ->
      if Map.has_key?(n, :children), do: [n.pid | supervisors(n.children)], else: []
    end)
  end

  defp child_pids(nodes) do
    Enum.flat_map(nodes, fn n ->
      [n.pid | child_pids(Map.get(n, :children, []))] |> Enum.filter(&is_pid/1)
    end)
  end

  defp node_json(n, names) do
    %{
      pid: if(is_pid(n.pid), do: View.pid(n.pid), else: inspect(n.pid)),
      name: if(is_pid(n.pid), do: name(names, n.pid)),
      id: if(n.id, do: inspect(n.id)),
      type: Map.get(n, :type, :supervisor),
      modules: n |> Map.get(:modules, []) |> List.wrap() |> Enum.map(&inspect/1),
      children: if(Map.has_key?(n, :children), do: Enum.map(n.children, &node_json(&1, names)))
    }
  end

  # replay

  defp replay(store, params, ctx) do
    filters = [store: store] ++ kinds!(params) ++ pid_filter!(params, :pid)
    seq = int!(params, "seq", nil, 1, nil)

    at =
      case {seq, params["time"]} do
        {seq, _} when is_integer(seq) -> {:seq, seq}
        {nil, blank} when blank in [nil, ""] -> :start
        {nil, text} -> time!(text)
      end

    {:ok, cursor} =
      case ElixirScope.Replay.open(at, filters) do
        {:ok, c} -> {:ok, c}
        {:error, :no_events} -> raise ArgumentError, "no events to replay with these filters"
      end

    {cursor, moved} =
      case params["step"] || "here" do
        "here" -> {cursor, true}
        "start" -> {elem(ElixirScope.Replay.open(:start, filters), 1), true}
        "end" -> {elem(ElixirScope.Replay.open(:now, filters), 1), true}
        "next" -> step(cursor, ElixirScope.Replay.next(cursor))
        "prev" -> step(cursor, ElixirScope.Replay.prev(cursor))
        "until" -> until(cursor, filters, params)
        other -> bad!("step", other, ~w(here start end next prev until))
      end

    view = ElixirScope.Replay.view(cursor)
    e = view.event
    pids = Map.keys(view.processes)
    names = names(store, ctx, pids)

    processes =
      for pid <- Enum.sort(pids) do
        p = view.processes[pid]
        {known, pending} = p.pending

        before =
          case Query.state_at(pid, {:seq, e.seq - 1}, store: store) do
            {:ok, s} -> s
            _ -> :unknown
          end

        %{
          pid: View.pid(pid),
          name: name(names, pid),
          state: if(p.state == :unknown, do: nil, else: View.term(p.state)),
          diff:
            if(p.state != :unknown and before != :unknown and e.kind == :state,
              do: diff_json(StateDiff.diff(before, p.state))
            ),
          pending_known: known == :ok,
          pending_count: length(pending),
          pending:
            pending
            |> Enum.take(@max_pending)
            |> Enum.map(&%{seq: &1.seq, data: View.term(&1.data)}),
          calls: Enum.map(p.calls, &View.mfa(&1.mfa))
        }
      end

    %{
      event: View.event(e, store, names),
      moved: moved,
      processes: processes,
      around: Enum.map(around(e, store), &View.pid/1)
    }
  end

  # The processes a step's message diagram shows: the event's, its peer, and for a received
  # message its sender (from its traced send, or the caller a call names).
  defp around(%Event{} = e, store) do
    sender =
      case e do
        %Event{kind: :receive, data: {:"$gen_call", {caller, _}, _}} when is_pid(caller) ->
          caller

        %Event{kind: :receive} ->
          case Query.paired(e.seq, store: store) do
            {:ok, %Event{pid: pid}} -> pid
            _ -> nil
          end

        _ ->
          nil
      end

    Enum.uniq(Enum.filter([e.pid, e.peer, sender], &is_pid/1))
  end

  defp time!(text) do
    case is_binary(text) && DateTime.from_iso8601(text) do
      {:ok, dt, _offset} ->
        dt

      _ ->
        raise ArgumentError,
              "invalid time #{inspect(text)}: expected ISO 8601, e.g. 2026-12-05T10:02:01.123456Z"
    end
  end

  defp step(cursor, {:ok, next}), do: {next, next.event.seq != cursor.event.seq}
  defp step(cursor, {:error, _}), do: {cursor, false}

  defp until(cursor, filters, params) do
    case pattern!(params) do
      nil ->
        raise ArgumentError, "step=until needs a pattern"

      {key, text} ->
        after_seq = cursor.event.seq

        case Query.find([{key, text}, after_seq: after_seq, limit: 1] ++ filters) do
          [%{event: hit}] -> {elem(ElixirScope.Replay.open({:seq, hit.seq}, filters), 1), true}
          [] -> {cursor, false}
        end
    end
  end

  # crashes

  defp crashes(store, params, ctx) do
    limit = int!(params, "limit", 20, 1, 50)

    exits =
      Query.events(store: store, kind: :exit, order: :desc, limit: 1_000)
      |> Enum.reject(&(&1.data in [:normal, :shutdown] or match?({:shutdown, _}, &1.data)))
      |> Enum.take(limit)

    names = names(store, ctx, Enum.map(exits, & &1.pid))

    %{
      crashes:
        for e <- exits do
          report =
            case Query.why_crashed(e.pid, store: store) do
              {:ok, c} -> ElixirScope.Crash.format(c)
              {:error, _} -> nil
            end

          %{
            seq: e.seq,
            time: View.time(store, e.ts),
            pid: View.pid(e.pid),
            name: name(names, e.pid),
            reason: inspect(e.data, limit: 8, printable_limit: 200),
            report: report
          }
        end
    }
  end

  # tracked calls and their variables

  defp calls(store, params) do
    limit = int!(params, "limit", 100, 1, @max_limit)

    # Entry events are `{:"$call", line, _}`: matched natively, only they are decoded.
    entries =
      Query.find(store: store, kind: :var, data: ~s({:"$call", _, _}), order: :desc, limit: limit)
      |> Enum.map(& &1.event)

    %{
      calls:
        Enum.map(entries, fn e ->
          %{seq: e.seq, time: View.time(store, e.ts), pid: View.pid(e.pid), mfa: View.mfa(e.mfa)}
        end)
    }
  end

  defp call(store, params) do
    seq =
      int!(params, "seq", nil, 1, nil) ||
        raise ArgumentError, "invalid seq nil: expected a tracked call's seq"

    entry =
      case Query.events(store: store, kind: :var, after_seq: seq - 1, limit: 1) do
        [%Event{seq: ^seq, data: {:"$call", _, _}} = e] -> e
        _ -> raise ArgumentError, "no tracked call at seq #{seq}"
      end

    lines =
      case Query.source_lines(entry, store: store) do
        {:ok, lines} ->
          for l <- lines do
            %{
              line: l.line,
              # A source file that is not UTF-8 is shown escaped.
              code: if(String.valid?(l.code), do: l.code, else: inspect(l.code)),
              bindings:
                Enum.map(
                  l.bindings,
                  &%{name: Atom.to_string(&1.name), value: View.term(&1.value)}
                )
            }
          end

        {:error, _} ->
          nil
      end

    %{
      seq: seq,
      pid: View.pid(entry.pid),
      mfa: View.mfa(entry.mfa),
      lines: lines,
      bindings:
        Enum.map(Query.variables(entry, store: store), fn b ->
          %{name: Atom.to_string(b.name), line: b.line, value: View.term(b.value)}
        end)
    }
  end

  # control

  defp control(params, ctx) do
    cond do
      not live?(ctx) ->
        {409, err("this UI reads a saved trace: there is no capture to control")}

      not is_map(params) ->
        {400, err("expected a JSON object with an \"action\"")}

      true ->
        case params["action"] do
          "stop" ->
            :ok = ElixirScope.stop()
            {200, %{ok: true}}

          # A fresh capture with the default options (what was traced is not traced again).
          "start" ->
            case ElixirScope.start() do
              {:ok, _} -> {200, %{ok: true}}
              {:error, :already_running} -> {409, err("a capture is already running")}
              {:error, reason} -> {500, err("the capture did not start: #{inspect(reason)}")}
            end

          # What to trace: a pid, a registered name or a module that exist, :all or :new.
          action when action in ["trace", "untrace"] ->
            target = target!(params["target"])

            result =
              if action == "trace",
                do: ElixirScope.trace(target),
                else: ElixirScope.untrace(target)

            case result do
              :ok -> {200, %{ok: true}}
              {:error, :not_running} -> {409, err("no capture is running")}
              {:error, reason} -> {400, err(ElixirScope.Error.describe(reason))}
            end

          "level" ->
            level =
              Map.get(@levels, params["level"]) ||
                bad!("level", params["level"], Map.keys(@levels))

            applied(ElixirScope.set_level(level))

          "sampling" ->
            rate = params["rate"]

            unless is_number(rate) and rate >= 0 and rate <= 1,
              do:
                raise(
                  ArgumentError,
                  "invalid rate #{inspect(rate)}: expected a number from 0.0 to 1.0"
                )

            applied(ElixirScope.set_sampling(rate / 1))

          other ->
            bad!("action", other, ["start", "stop", "trace", "untrace", "level", "sampling"])
        end
    end
  end

  # A trace target from text, without making atoms: a pid, `:all`/`all`, `:new`/`new`, or the
  # name of an existing atom (a registered name, `:name`, or a module, `MyApp.Server`).
  defp target!(text) when is_binary(text) do
    text = String.trim(text)

    cond do
      text in ["all", ":all"] ->
        :all

      text in ["new", ":new"] ->
        :new

      match?({:ok, _}, View.parse_pid(text)) ->
        elem(View.parse_pid(text), 1)

      true ->
        View.existing_atom(String.trim_leading(text, ":")) ||
          raise ArgumentError,
                "invalid target #{inspect(text)}: expected a pid (#PID<0.1.0>), a registered " <>
                  "name or module that exists, all or new"
    end
  end

  defp target!(other),
    do: raise(ArgumentError, "invalid target #{inspect(other)}: expected a string")

  defp applied(:ok), do: {200, %{ok: true}}
  defp applied({:error, :not_running}), do: {409, err("no capture is running")}
  defp applied({:error, reason}), do: {500, err("not applied: #{inspect(reason)}")}

  # parameters

  defp page!(params) do
    [
      after_seq: int!(params, "after_seq", 0, 0, nil),
      limit: int!(params, "limit", 100, 1, @max_limit),
      order: order!(params)
    ] ++
      case params["before_seq"] do
        nil -> []
        _ -> [before_seq: int!(params, "before_seq", nil, 1, nil)]
      end
  end

  defp order!(params) do
    case params["order"] do
      nil -> :asc
      "asc" -> :asc
      "desc" -> :desc
      other -> bad!("order", other, ["asc", "desc"])
    end
  end

  defp kinds!(params) do
    case params["kind"] do
      nil ->
        []

      "" ->
        []

      text ->
        kinds =
          for k <- String.split(text, ",", trim: true),
              do: Map.get(@kinds, String.trim(k)) || bad!("kind", k, Map.keys(@kinds))

        [kind: kinds]
    end
  end

  defp pid_filter!(params, key) do
    case params[Atom.to_string(key)] do
      nil -> []
      "" -> []
      _ -> [{key, pid!(params, Atom.to_string(key))}]
    end
  end

  defp pid!(params, key) do
    text = params[key]

    case is_binary(text) && View.parse_pid(text) do
      {:ok, pid} ->
        pid

      _ ->
        raise ArgumentError,
              "invalid #{key} #{inspect(text)}: expected a local pid like #PID<0.123.0>"
    end
  end

  defp pattern!(params) do
    case {params["pattern_key"], params["pattern"]} do
      {_, nil} ->
        nil

      {_, ""} ->
        nil

      {key, text} ->
        {Map.get(@pattern_keys, key || "message") ||
           bad!("pattern_key", key, Map.keys(@pattern_keys)), text}
    end
  end

  defp int!(params, key, default, min, max) do
    case params[key] do
      nil ->
        default

      text ->
        case Integer.parse(to_string(text)) do
          {n, ""} when n >= min and (max == nil or n <= max) ->
            n

          _ ->
            range = if max, do: "from #{min} to #{max}", else: "of at least #{min}"
            raise ArgumentError, "invalid #{key} #{inspect(text)}: expected an integer #{range}"
        end
    end
  end

  defp bad!(what, value, allowed) do
    raise ArgumentError,
          "invalid #{what} #{inspect(value)}: expected one of #{Enum.map_join(Enum.sort(allowed), ", ", &inspect/1)}"
  end

  defp err(message), do: %{error: message}
end
