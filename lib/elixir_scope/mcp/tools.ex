defmodule ElixirScope.MCP.Tools do
  @moduledoc """
  The MCP server's tools: one per question a person debugging asks, each a thin call of the
  public query API, its answer text an assistant reads (terms printed as `inspect` prints them,
  with limits). Answers are bounded: a page of events or states at most, at most
  #{16_000} characters, and a last line saying what was left out and how to get more.

  Processes are given as text: `#PID<0.123.0>` or a registered name (`MyApp.Cache`,
  `:my_worker`), read without creating atoms. Tools that change what is traced
  (`trace_process`, `trace_named_process`, `trace_module`) answer only when the server was
  started with `allow_tracing: true`.
  """

  alias ElixirScope.{Crash, Event, Query, Store, StateDiff}
  alias ElixirScope.Query.Aggregate
  alias ElixirScope.UI.View

  @max_text 16_000
  @max_limit 200

  @pid %{type: "string", description: "a process: #PID<0.123.0>, or a registered name"}
  @limit %{
    type: "integer",
    minimum: 1,
    maximum: @max_limit,
    description: "at most this many (default 20)"
  }
  @after_seq %{type: "integer", minimum: 0, description: "page: only events after this seq"}
  @seq %{
    type: "integer",
    minimum: 1,
    description: "a point of the capture: an event's seq (default: now)"
  }

  @doc "The tools, as `tools/list` answers them (tracing tools only when allowed)."
  @spec list(map()) :: [map()]
  def list(ctx) do
    for t <- tools(), t.name not in tracing() or allowed?(ctx) do
      %{
        name: t.name,
        title: t.title,
        description: t.description,
        inputSchema: %{type: "object", properties: t.props, required: t.required}
      }
    end
  end

  @doc """
  Runs tool `name` on `args`: `{:ok, result}` (a `tools/call` result: text content, `isError`
  set when the question could not be answered) or `{:error, code, message}` for a call that
  names no tool or gives arguments that do not fit its schema.
  """
  @spec call(String.t(), map(), map()) :: {:ok, map()} | {:error, integer(), String.t()}
  def call(name, args, ctx) do
    case Enum.find(tools(), &(&1.name == name)) do
      nil ->
        {:error, -32602, "unknown tool: #{name}"}

      # Arguments that do not fit the schema are the tool's error to report (the assistant can
      # read it and retry), as revision 2025-11-25 asks.
      tool ->
        case check(tool, args) do
          :ok -> {:ok, run(tool, args, ctx)}
          {:bad, message} -> {:ok, text_result("invalid arguments for #{name}: #{message}", true)}
        end
    end
  end

  defp run(tool, args, ctx) do
    cond do
      tool.name in tracing() and not allowed?(ctx) ->
        text_result(
          "refused: tracing from MCP is off; start the server with mcp: [allow_tracing: true]",
          true
        )

      # Over HTTP on loopback no token is asked for reading; changing what is traced wants it.
      tool.name in tracing() and not Map.get(ctx, :authenticated, true) ->
        text_result(
          "refused: tracing over HTTP needs the UI's token (Authorization: Bearer)",
          true
        )

      true ->
        answer(tool, args, ctx)
    end
  end

  defp answer(tool, args, ctx) do
    case tool.run.(args, store!(ctx)) do
      {:error, message} -> text_result(message, true)
      text when is_binary(text) -> text_result(text, false)
    end
  rescue
    e in ArgumentError ->
      text_result(Exception.message(e), true)

    # Anything else is a defect here, not the caller's: said, not crashed on.
    e ->
      text_result("could not answer: " <> Exception.format(:error, e, __STACKTRACE__), true)
  end

  defp text_result(text, error?) do
    text = valid_utf8(text)

    text =
      if String.length(text) > @max_text,
        do:
          String.slice(text, 0, @max_text) <>
            "\n… (cut at #{@max_text} characters: ask for a smaller page)",
        else: text

    %{content: [%{type: "text", text: text}], isError: error?}
  end

  # Text whose bytes are not UTF-8 (a recorded message of raw bytes) with those bytes escaped.
  defp valid_utf8(text) do
    if String.valid?(text), do: text, else: escape_invalid(text, [])
  end

  defp escape_invalid(<<c::utf8, rest::binary>>, acc),
    do: escape_invalid(rest, [acc, <<c::utf8>>])

  defp escape_invalid(<<b, rest::binary>>, acc),
    do: escape_invalid(rest, [acc, "\\x" <> Base.encode16(<<b>>)])

  defp escape_invalid(<<>>, acc), do: IO.iodata_to_binary(acc)

  defp allowed?(ctx), do: Map.get(ctx, :allow_tracing, false) == true
  defp tracing, do: ["trace_process", "trace_named_process", "trace_module"]

  defp store!(ctx) do
    case Map.get(ctx, :store, :default) do
      :default ->
        Store.default() ||
          raise ArgumentError, "no capture yet: start one with ElixirScope.start/1"

      %Store{} = store ->
        store
    end
  end

  # Arguments against the tool's schema: required keys, and each value's type and range.
  defp check(tool, args) do
    missing = Enum.reject(tool.required, &Map.has_key?(args, &1))
    unknown = Map.keys(args) -- Map.keys(tool.props)

    cond do
      missing != [] -> {:bad, "missing #{Enum.join(missing, ", ")}"}
      unknown != [] -> {:bad, "unknown #{Enum.join(unknown, ", ")}"}
      true -> Enum.find_value(args, :ok, fn {k, v} -> type_error(k, v, tool.props[k]) end)
    end
  end

  defp type_error(k, v, %{type: "string"} = s) do
    cond do
      not is_binary(v) ->
        {:bad, "#{k} is a string"}

      Map.has_key?(s, :enum) and v not in s.enum ->
        {:bad, "#{k} is one of #{Enum.join(s.enum, ", ")}"}

      true ->
        nil
    end
  end

  defp type_error(k, v, %{type: "integer"} = s) do
    if is_integer(v) and v >= Map.get(s, :minimum, v) and v <= Map.get(s, :maximum, v),
      do: nil,
      else: {:bad, "#{k} is an integer#{range(s)}"}
  end

  defp type_error(k, v, %{type: "boolean"}),
    do: if(is_boolean(v), do: nil, else: {:bad, "#{k} is a boolean"})

  defp range(%{minimum: lo, maximum: hi}), do: " from #{lo} to #{hi}"
  defp range(%{minimum: lo}), do: " of at least #{lo}"
  defp range(_), do: ""

  # The tools.

  defp tools do
    [
      tool(
        "status",
        "Capture status",
        "What the capture holds: events, drops, level, what is traced.",
        %{},
        [],
        &status/2
      ),
      tool(
        "processes",
        "Processes",
        "The processes with the most events, with their registered names.",
        %{limit: @limit},
        [],
        &processes/2
      ),
      tool(
        "why_crashed",
        "Why a process crashed",
        "Why a process died: its exit reason and stacktrace, the exceptions it raised, its last messages and state, linked processes.",
        %{pid: @pid},
        ["pid"],
        &why_crashed/2
      ),
      tool(
        "crashes",
        "Crashes",
        "Every recorded abnormal exit, newest first, with its reason.",
        %{limit: @limit},
        [],
        &crashes/2
      ),
      tool(
        "state_at",
        "State at a point",
        "The state a process had at a point of the capture (an event's seq; default now).",
        %{pid: @pid, seq: @seq},
        ["pid"],
        &state_at/2
      ),
      tool(
        "state_timeline",
        "State timeline",
        "A process's recorded states in order, each with what changed from the one before (the seed's get_state_timeline).",
        %{pid: @pid, limit: @limit, after_seq: @after_seq},
        ["pid"],
        &state_timeline/2
      ),
      tool(
        "analyze_state_changes",
        "Analyze state changes",
        "Which parts of a process's state changed, how often, and by which callbacks.",
        %{pid: @pid},
        ["pid"],
        &analyze_state_changes/2
      ),
      tool(
        "pending_messages_at",
        "Pending messages",
        "The messages waiting in a process's mailbox at a point of the capture.",
        %{pid: @pid, seq: @seq},
        ["pid"],
        &pending_at/2
      ),
      tool(
        "message_flow",
        "Message flow",
        "Messages one process sent another (replies and sends to names included).",
        %{from: @pid, to: @pid, limit: @limit, after_seq: @after_seq},
        ["from", "to"],
        &message_flow/2
      ),
      tool(
        "function_calls",
        "Function calls",
        "Calls of a traced function (module, optional function), with their results.",
        %{
          module: %{type: "string", description: "a module, e.g. MyApp.Cart"},
          function: %{type: "string"},
          limit: @limit,
          after_seq: @after_seq
        },
        ["module"],
        &function_calls/2
      ),
      tool(
        "execution_path",
        "Execution path",
        "A process's calls, returns and exceptions in order.",
        %{pid: @pid, limit: @limit, after_seq: @after_seq},
        ["pid"],
        &execution_path/2
      ),
      tool(
        "find_events",
        "Find events",
        "Events matching a pattern in Elixir syntax, as ElixirScope.Query.find/1 takes it (e.g. {:increment, n} when n > 5), and/or a kind and a process.",
        %{
          pattern: %{type: "string", description: "an Elixir pattern, with an optional guard"},
          pattern_key: %{
            type: "string",
            enum: ~w(message args result state data),
            description: "what the pattern applies to (default message)"
          },
          kind: %{type: "string", enum: Enum.map(Event.kinds(), &Atom.to_string/1)},
          pid: @pid,
          limit: @limit,
          after_seq: @after_seq
        },
        [],
        &find_events/2
      ),
      tool(
        "count_events",
        "Count events",
        "How many events match (a kind, a process, a pattern), in all or grouped by pid, peer, kind, module, mfa or tag (the top 20).",
        %{
          kind: %{type: "string", enum: Enum.map(Event.kinds(), &Atom.to_string/1)},
          pid: @pid,
          pattern: %{type: "string"},
          pattern_key: %{type: "string", enum: ~w(message args result state data)},
          group_by: %{type: "string", enum: ~w(pid peer kind module mfa tag)}
        },
        [],
        &count_events/2
      ),
      tool(
        "supervision_tree",
        "Supervision tree",
        "The supervision tree at a point of the capture (default now).",
        %{seq: @seq},
        [],
        &supervision_tree/2
      ),
      tool(
        "replay_step",
        "Replay step",
        "The event at a seq (or the one after/before it) with the involved processes' states, mailboxes and open calls.",
        %{seq: %{type: "integer", minimum: 1}, step: %{type: "string", enum: ~w(here next prev)}},
        ["seq"],
        &replay_step/2
      ),
      tool(
        "summarize",
        "Summarize",
        "What happened to a process (or the whole capture: target \"all\"), in a few sentences whose numbers come from the queries: state changes, numeric fields, messages by tag, calls and their durations, crashes.",
        %{target: %{type: "string", description: "a process, or all"}},
        ["target"],
        &summarize/2
      ),
      tool(
        "generate_test",
        "Generate a test",
        "An ExUnit test module replaying a GenServer's (or gen_statem's) recorded callbacks and asserting the recorded replies and states, ending at its crash if it crashed: the source, to save under test/.",
        %{pid: @pid},
        ["pid"],
        &generate_test/2
      ),
      tool(
        "trace_process",
        "Trace a process",
        "Start tracing a process (needs allow_tracing).",
        %{pid: @pid},
        ["pid"],
        &trace_target/2
      ),
      tool(
        "trace_named_process",
        "Trace a named process",
        "Start tracing a registered process by name (needs allow_tracing).",
        %{name: %{type: "string"}},
        ["name"],
        &trace_named/2
      ),
      tool(
        "trace_module",
        "Trace a module",
        "Start tracing a module's calls in every process (needs allow_tracing).",
        %{module: %{type: "string"}},
        ["module"],
        &trace_module/2
      )
    ]
  end

  defp tool(name, title, description, props, required, run),
    do: %{
      name: name,
      title: title,
      description: description,
      props: Map.new(props, fn {k, v} -> {to_string(k), v} end),
      required: required,
      run: run
    }

  defp status(_args, store) do
    s = Store.stats(store)

    counts =
      "events: #{s.events} (last seq #{s.last_seq}), dropped: #{s.dropped}, truncated: #{s.truncated}" <>
        if s[:overflow] == :evict_oldest,
          do: "\na ring keeping the newest events: seqs up to #{s.evicted} were evicted",
          else: ""

    # The running capture's settings and targets only when this is its store.
    if store == Store.default() and Store.captures?(store) do
      running = ElixirScope.status()

      [
        counts,
        "level: #{s.tracing_level}, sampling: #{s.sample_rate} by #{s.sample_by}",
        "capture running: #{running.running}",
        "traced processes: #{Enum.map_join(running.traced.pids, ", ", &inspect/1)}",
        "traced modules: #{Enum.map_join(running.traced.modules, ", ", &inspect/1)}"
      ]
      |> Kernel.++(live_lines(running))
      |> Enum.join("\n")
    else
      counts <> "\na saved trace, read from disk: it captures nothing"
    end
  end

  # What keeps the capture safe and why its detail changed: profile, limits, load, triggers.
  defp live_lines(st) do
    limits = st[:limits] || %{}
    governor = st[:governor] || %{}

    [
      st[:profile] && "profile: #{st.profile}",
      limits[:max_rate] &&
        "rate cap: #{inspect(limits.max_rate)} (tripped: #{st[:rate_tripped]})",
      limits[:max_time] && "time cap: #{limits.max_time} ms",
      limits[:tripped] not in [nil, []] && "limits reached: #{inspect(limits.tripped)}",
      governor[:load] && "load: #{governor.load.state} #{inspect(governor.load.measures)}",
      governor[:triggers] not in [nil, []] &&
        "triggers: " <>
          Enum.map_join(governor.triggers, "; ", &"#{inspect(&1.condition)} fired #{&1.fired}x"),
      st[:stopped_by] && "stopped by: #{inspect(st.stopped_by)}"
    ]
    |> Enum.filter(&is_binary/1)
  end

  defp processes(args, store) do
    limit = Map.get(args, "limit", 20)
    counts = Aggregate.per_process(store: store)
    top = counts |> Enum.sort_by(fn {_, n} -> -n end) |> Enum.take(limit)
    names = names(store)

    lines =
      for {pid, n} <- top do
        "#{inspect(pid)}#{if name = names[pid], do: " (#{inspect(name)})"}: #{n} events"
      end

    Enum.join(lines, "\n") <> more(map_size(counts) - length(top), "processes", "raise limit")
  end

  defp why_crashed(args, store) do
    case Query.why_crashed(pid!(args["pid"], store), store: store) do
      {:ok, crash} -> Crash.format(crash)
      {:error, :no_exit} -> {:error, "no exit of #{args["pid"]} was recorded"}
    end
  end

  defp crashes(args, store) do
    limit = Map.get(args, "limit", 20)

    store
    |> abnormal_exits(nil, limit, 50, [])
    |> Enum.map_join(
      "\n",
      &"##{&1.seq} #{inspect(&1.pid)} exited: #{inspect(&1.data, limit: 10, printable_limit: 200)}"
    )
    |> case do
      "" -> "no abnormal exit recorded"
      text -> text
    end
  end

  # The newest `limit` abnormal exits, read back a page of exits at a time (at most `pages`
  # pages of 1,000: a node whose processes mostly exit normally is still searched far back).
  defp abnormal_exits(_store, _before, limit, _pages, acc) when length(acc) >= limit,
    do: Enum.take(acc, limit)

  defp abnormal_exits(_store, _before, _limit, 0, acc), do: acc

  defp abnormal_exits(store, before, limit, pages, acc) do
    bound = if before, do: [before_seq: before], else: []

    case Query.events([store: store, kind: :exit, order: :desc, limit: 1000] ++ bound) do
      [] ->
        acc

      page ->
        found =
          Enum.reject(page, &(&1.data in [:normal, :shutdown] or match?({:shutdown, _}, &1.data)))

        abnormal_exits(store, List.last(page).seq, limit, pages - 1, acc ++ found)
    end
  end

  defp state_at(args, store) do
    pid = pid!(args["pid"], store)
    at = at(args, store)

    case Query.state_at(pid, at, store: store) do
      {:ok, state} ->
        View.term(state)

      {:error, :no_state} ->
        {:error, "no state of #{args["pid"]} recorded at or before that point"}

      {:error, :evicted} ->
        {:error,
         "the state of #{args["pid"]} at that point was evicted: the store keeps only its " <>
           "newest events (overflow: :evict_oldest)"}
    end
  end

  defp state_timeline(args, store) do
    pid = pid!(args["pid"], store)
    limit = Map.get(args, "limit", 20)

    states =
      Query.events(
        store: store,
        pid: pid,
        kind: :state,
        after_seq: Map.get(args, "after_seq", 0),
        limit: limit + 1
      )

    {page, rest} = Enum.split(states, limit)

    {lines, _} =
      Enum.map_reduce(page, nil, fn e, before ->
        change =
          case before do
            nil -> ""
            b -> "\n  changed: " <> diff_text(StateDiff.diff(b.data, e.data))
          end

        {"##{e.seq} after #{View.mfa(e.mfa) || "snapshot"}: #{inspect(e.data, limit: 20, printable_limit: 200)}#{change}",
         e}
      end)

    Enum.join(lines, "\n") <> next_page(rest, List.last(page))
  end

  defp analyze_state_changes(args, store) do
    pid = pid!(args["pid"], store)
    states = Query.state_timeline(pid, store: store)

    changes =
      states
      |> Enum.chunk_every(2, 1, :discard)
      |> Enum.flat_map(fn [a, b] ->
        d = StateDiff.diff(a.data, b.data)

        for {path, _, _} <-
              d.changed ++
                Enum.map(d.added, &Tuple.append(&1, nil)) ++
                Enum.map(d.removed, &Tuple.append(&1, nil)),
            do: {path_text(path), View.mfa(b.mfa)}
      end)

    by_path = Enum.frequencies_by(changes, &elem(&1, 0))

    [
      "#{length(states)} recorded states, #{(length(states) - 1) |> max(0)} transitions",
      for {path, n} <- Enum.sort_by(by_path, fn {_, n} -> -n end) |> Enum.take(30) do
        callbacks =
          changes
          |> Enum.filter(&(elem(&1, 0) == path))
          |> Enum.map(&elem(&1, 1))
          |> Enum.uniq()
          |> Enum.join(", ")

        "#{path}: changed #{n} times (by #{callbacks})"
      end
    ]
    |> List.flatten()
    |> Enum.join("\n")
  end

  defp pending_at(args, store) do
    pid = pid!(args["pid"], store)

    case Query.pending_messages_at(pid, at(args, store), store: store) do
      {known, messages} ->
        head =
          "#{length(messages)} pending#{if known == :unknown, do: " (whether they were consumed is unknown)", else: ""}"

        Enum.join(
          [
            head
            | Enum.map(
                Enum.take(messages, 50),
                &"  ##{&1.seq} #{inspect(&1.data, limit: 10, printable_limit: 200)}"
              )
          ],
          "\n"
        ) <>
          more(length(messages) - 50, "messages", "ask at an earlier point")
    end
  end

  defp message_flow(args, store) do
    events =
      Query.message_flow(pid!(args["from"], store), pid!(args["to"], store), page(args, store))

    lines(events, args)
  end

  defp function_calls(args, store) do
    module = module!(args["module"])

    mfa =
      case args["function"] do
        nil -> module
        f -> {module, existing!(f, "function")}
      end

    lines(Query.events([mfa: mfa, kind: [:call, :return, :exception]] ++ page(args, store)), args)
  end

  defp execution_path(args, store) do
    lines(
      Query.events(
        [pid: pid!(args["pid"], store), kind: [:call, :return, :exception]] ++ page(args, store)
      ),
      args
    )
  end

  defp find_events(args, store) do
    filters =
      page(args, store) ++
        if(k = args["kind"], do: [kind: String.to_existing_atom(k)], else: []) ++
        if(p = args["pid"], do: [pid: pid!(p, store)], else: [])

    events =
      case args["pattern"] do
        nil ->
          Query.events(filters)

        text ->
          Query.find([
            {String.to_existing_atom(Map.get(args, "pattern_key", "message")), text} | filters
          ])
          |> Enum.map(& &1.event)
      end

    lines(events, args)
  end

  defp count_events(args, store) do
    filters =
      [store: store] ++
        if(k = args["kind"], do: [kind: String.to_existing_atom(k)], else: []) ++
        if(p = args["pid"], do: [pid: pid!(p, store)], else: []) ++
        if(t = args["pattern"],
          do: [{String.to_existing_atom(Map.get(args, "pattern_key", "message")), t}],
          else: []
        )

    case args["group_by"] do
      nil ->
        "#{Aggregate.count(filters)} events"

      key ->
        Aggregate.top(filters, String.to_existing_atom(key), 20)
        |> Enum.map_join("\n", fn {k, n} -> "#{inspect(k)}: #{n}" end)
        |> case do
          "" -> "no events"
          text -> text
        end
    end
  end

  defp supervision_tree(args, store) do
    case Query.supervision_tree_at(at(args, store), store: store) do
      [] -> "no traced supervisor was alive then"
      roots -> Enum.map_join(roots, "\n", &tree_text(&1, 0))
    end
  end

  defp tree_text(node, depth) do
    pad = String.duplicate("  ", depth)

    line =
      "#{pad}#{inspect(node.pid)} #{if node.id, do: inspect(node.id), else: "(root)"} #{Map.get(node, :type, :supervisor)}"

    Enum.join([line | Enum.map(Map.get(node, :children, []), &tree_text(&1, depth + 1))], "\n")
  end

  defp replay_step(args, store) do
    {:ok, cursor} =
      case ElixirScope.Replay.open({:seq, args["seq"]}, store: store) do
        {:ok, c} -> {:ok, c}
        {:error, :no_events} -> raise ArgumentError, "no events at or before seq #{args["seq"]}"
      end

    cursor =
      case Map.get(args, "step", "here") do
        "here" -> cursor
        "next" -> with({:ok, c} <- ElixirScope.Replay.next(cursor), do: c, else: (_ -> cursor))
        "prev" -> with({:ok, c} <- ElixirScope.Replay.prev(cursor), do: c, else: (_ -> cursor))
      end

    ElixirScope.Replay.format(cursor)
  end

  defp summarize(%{"target" => "all"}, store), do: Query.summarize(:all, :all, store: store)
  defp summarize(%{"target" => t}, store), do: Query.summarize(pid!(t, store), :all, store: store)

  defp generate_test(args, store) do
    case ElixirScope.TestGen.generate(pid!(args["pid"], store), :all, store: store) do
      {:ok, source} ->
        source

      {:error, :no_callbacks} ->
        {:error, "no recorded callbacks of #{args["pid"]}: trace it as a GenServer first"}

      {:error, {:truncated, seq}} ->
        {:error, "event ##{seq} was cut by max_payload_bytes: it cannot be replayed"}

      {:error, {:not_data, seq}} ->
        {:error, "event ##{seq} passes a pid, a reference or a function: it cannot be a test"}
    end
  end

  defp trace_target(args, store), do: traced(ElixirScope.trace(pid!(args["pid"], store)))

  defp trace_named(args, _store),
    do: traced(ElixirScope.trace(name!(String.trim_leading(args["name"], ":"))))

  defp trace_module(args, _store),
    do: traced(ElixirScope.trace(module!(args["module"]), as: :module))

  defp traced(:ok), do: "traced"
  defp traced({:error, reason}), do: {:error, ElixirScope.Error.describe(reason)}

  # Helpers.

  defp page(args, store),
    do: [
      store: store,
      after_seq: Map.get(args, "after_seq", 0),
      limit: Map.get(args, "limit", 20) + 1
    ]

  defp lines(events, args) do
    {page, rest} = Enum.split(events, Map.get(args, "limit", 20))
    text = Enum.map_join(page, "\n", &Event.describe(&1, limit: 10))
    if(text == "", do: "no events", else: text) <> next_page(rest, List.last(page))
  end

  defp next_page([], _last), do: ""
  defp next_page(_rest, last), do: "\n… more: call again with after_seq: #{last.seq}"

  defp more(n, _what, _how) when n <= 0, do: ""
  defp more(n, what, how), do: "\n… #{n} more #{what} not shown (#{how})"

  defp at(args, _store), do: if(s = args["seq"], do: {:seq, s}, else: :now)

  defp diff_text(%StateDiff{equal: true}), do: "nothing"

  defp diff_text(d) do
    Enum.map_join(d.changed, ", ", fn {p, a, b} ->
      "#{path_text(p)} #{inspect(a, limit: 5)} -> #{inspect(b, limit: 5)}"
    end) <>
      Enum.map_join(d.added, "", fn {p, v} -> ", +#{path_text(p)} #{inspect(v, limit: 5)}" end) <>
      Enum.map_join(d.removed, "", fn {p, _} -> ", -#{path_text(p)}" end)
  end

  defp path_text([]), do: "(whole state)"
  defp path_text(path), do: Enum.map_join(path, "", &"[#{inspect(&1)}]")

  defp names(store) do
    for %Event{kind: kind, pid: pid, data: data} <-
          Query.events(store: store, kind: [:register, :traced]),
        name =
          (case {kind, data} do
             # (A name another VM's trace holds as a binary counts too.)
             {:register, n} when is_atom(n) or is_binary(n) -> n
             {:traced, {_, n}} when (is_atom(n) or is_binary(n)) and n != nil -> n
             _ -> nil
           end),
        into: %{},
        do: {pid, name}
  end

  # A process from text: a pid, or a registered name that exists (resolved as queries do).
  defp pid!(text, store) do
    name = String.trim_leading(text, ":")

    case View.parse_pid(text) do
      {:ok, pid} ->
        pid

      :error ->
        case name_atom(name) do
          nil ->
            named_in_trace(store, name) ||
              raise ArgumentError, "no process named #{inspect(text)} exists"

          atom ->
            ElixirScope.Query.Names.resolve!(atom, store, "pid")
        end
    end
  end

  # A trace read in another VM keeps a name this VM has no atom for as a binary: the last
  # process the trace saw take it.
  defp named_in_trace(store, name) do
    full = if name =~ ~r/\A[A-Z]/, do: ["Elixir." <> name, name], else: [name]

    Query.events(store: store, kind: [:register, :traced], order: :desc)
    |> Enum.find_value(fn
      %Event{kind: :register, pid: pid, data: n} when is_binary(n) -> if n in full, do: pid
      %Event{kind: :traced, pid: pid, data: {_, n}} when is_binary(n) -> if n in full, do: pid
      _ -> nil
    end)
  end

  # A registered name: an Elixir-style one (`MyApp.Cache`) is tried as the module atom first.
  defp name!(text),
    do: name_atom(text) || raise(ArgumentError, "no process named #{inspect(text)} exists")

  defp name_atom(text), do: View.existing_atom(text)

  defp module!(text),
    do: existing!(if(text =~ ~r/\A[A-Z]/, do: "Elixir." <> text, else: text), "module")

  defp existing!(text, what) do
    String.to_existing_atom(text)
  rescue
    ArgumentError -> raise ArgumentError, "no #{what} named #{inspect(text)} exists"
  end
end
