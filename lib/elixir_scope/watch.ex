defmodule ElixirScope.Watch do
  @moduledoc """
  Live, bounded tracing in one line, for users of `:dbg`, `recon_trace` and rexbug: matching
  calls or messages are printed as they happen, and the watch stops by itself.

      iex> ElixirScope.watch("MyApp.Repo.get(_, id) when id > 10", limit: 10, return: true)
      iex> ElixirScope.watch(MyApp.Bank, "{:deposit, n} when n > 100", limit: {5, 1_000})

  Each line gives the time since the watch started, the process (with its registered name),
  and the call or message, printed with limits:

      +0.412s #PID<0.187.0> MyApp.Repo.get(User, 42)
      +0.413s #PID<0.187.0> MyApp.Repo.get/2 -> %User{id: 42, ...}
      +0.500s #PID<0.190.0> (MyApp.Bank) <- {:deposit, 500}

  ## Limits

  Whichever comes first stops the watch, and its last line says which:

    * `:limit` - a count (`10`: ten matches printed) or a rate (`{10, 1_000}`: more than ten
      matches within a second stops it, as recon's); `:count` and `:rate` set both at once.
      Default: 10 matches.
    * `:time` - milliseconds (default `60_000`).

  It also stops on `ElixirScope.unwatch/1`, when the capture stops (one of its own limits,
  or `ElixirScope.stop/0`), or when the device it prints to is gone.

  ## Capture

  What a watch prints lands in the store like any capture, so it can be queried afterwards
  with `ElixirScope.Query`. Without a running capture, a watch starts one (with a hard rate
  cap of 50,000 events per second) and stops it when it ends; the events stay queryable. The
  VM traces every call of the watched functions (patterns on local calls too), and the watch
  prints those whose arguments match: a pattern's guard is evaluated natively on the stored
  arguments, never by running code. Calls that match after a limit is reached but before the
  watch has stopped (at most a polling interval, 50 ms) are in the store, unprinted.

  ## Options

    * `:return` - also print each printed call's return value or exception (default `false`).
    * `:stack` - also print each printed call's callers, innermost first (default `false`):
      the VM takes a dump of the calling process at each call of the watched functions,
      matching or not, which costs microseconds per call; a `:stack` event keeps them in the
      store.
    * `:io` - the device to print to (default: the caller's group leader, the IEx shell).
  """

  use GenServer

  alias ElixirScope.{Args, Options, Query, Server, Store}
  alias ElixirScope.Query.DSL
  alias ElixirScope.Watch.Pattern

  @poll 50
  @page 1_000
  @default_count 10
  @default_time 60_000
  # The hard cap of a capture a watch starts itself.
  @own_capture [max_rate: {50_000, 1_000}]
  # Pages of events one poll reads at most, before other messages (unwatch, time) are seen.
  @pages_per_poll 20
  # Pids a watch remembers names and pending calls of, at most.
  @max_pids 10_000
  @inspect [limit: 20, printable_limit: 200, width: :infinity]
  @max_line 1_000

  @typedoc "Why a watch stopped: the exit reason of its process is `{:shutdown, why}`."
  @type why ::
          {:count, pos_integer()}
          | {:rate, {pos_integer(), pos_integer()}}
          | {:time, pos_integer()}
          | :unwatch
          | {:capture_stopped, term()}
          | :io_closed

  defstruct [
    :pattern,
    :target,
    :store,
    :io,
    :count,
    :rate,
    :time,
    :return?,
    :stack?,
    :started,
    :server,
    # Once the count is reached with `return: true`: {why, deadline} while the returns of the
    # printed calls are still awaited (nothing new is printed meanwhile).
    :closing,
    # Printed calls whose callers are awaited (`stack: true`): call seq => pid; where the
    # next look for them starts.
    shown: %{},
    stacks_after: 0,
    # Lines of this poll not printed yet (newest first): one write per poll.
    out: [],
    after_seq: 0,
    printed: 0,
    recent: [],
    stacks: %{},
    names: %{}
  ]

  @doc false
  # ElixirScope.watch/2: calls.
  @spec calls(String.t(), keyword()) :: {:ok, pid()} | {:error, term()}
  def calls(source, opts) do
    opts = options!(opts)
    start_watch(Pattern.calls!(source), nil, opts)
  end

  @doc false
  # ElixirScope.watch/3: messages of a process.
  @spec messages(pid() | atom(), String.t(), keyword()) :: {:ok, pid()} | {:error, term()}
  def messages(process, source, opts) do
    opts = options!(opts)
    pattern = Pattern.messages!(source)

    case process(process) do
      {:ok, pid} -> start_watch(pattern, pid, opts)
      error -> error
    end
  end

  defp process(pid) when is_pid(pid) do
    cond do
      node(pid) != node() -> {:error, {:remote_pid, pid}}
      Process.alive?(pid) -> {:ok, pid}
      true -> {:error, {:dead_process, pid}}
    end
  end

  defp process(name) when is_atom(name) and name not in [nil, true, false] do
    case Process.whereis(name) do
      nil -> {:error, {:unknown_target, name}}
      pid -> {:ok, pid}
    end
  end

  defp process(other) do
    raise ArgumentError,
          "ElixirScope.watch/3 expects a pid or a registered name, got: #{inspect(other)}"
  end

  @doc false
  # ElixirScope.unwatch/1: stops one watch, or every one.
  @spec unwatch(pid() | :all) :: :ok
  def unwatch(:all) do
    for {_, pid, _, [__MODULE__]} <- children(), do: unwatch(pid)
    :ok
  end

  def unwatch(pid) when is_pid(pid) do
    # Only a watch is asked: any other process would get a call it does not expect.
    if pid in running(), do: GenServer.call(pid, :unwatch, 30_000)
    :ok
  catch
    :exit, _ -> :ok
  end

  def unwatch(other), do: Args.bad!("watch", other, "a watch's pid or :all")

  @doc false
  # The running watches.
  @spec running() :: [pid()]
  def running, do: for({_, pid, _, [__MODULE__]} when is_pid(pid) <- children(), do: pid)

  defp children do
    DynamicSupervisor.which_children(ElixirScope.Supervisor)
  catch
    :exit, _ -> []
  end

  defp options!(opts) do
    opts =
      Options.validate!(opts,
        limit: nil,
        count: nil,
        rate: nil,
        time: @default_time,
        return: false,
        stack: false,
        io: nil
      )

    {count, rate} =
      case {opts[:limit], opts[:count], opts[:rate]} do
        {nil, nil, nil} ->
          {@default_count, nil}

        {nil, count, rate} ->
          {count && Args.pos_integer!(count, :count), ElixirScope.Limits.max_rate!(rate)}

        {n, nil, nil} when is_integer(n) ->
          {Args.pos_integer!(n, :limit), nil}

        {{_, _} = rate, nil, nil} ->
          {nil, rate!(rate)}

        {other, nil, nil} ->
          Args.bad!(:limit, other, "a count or a rate {n, ms}")

        _ ->
          raise ArgumentError, "give :limit, or :count and :rate, not both"
      end

    Args.boolean!(opts[:return], :return)
    Args.boolean!(opts[:stack], :stack)

    %{
      count: count,
      rate: rate,
      time: Args.pos_integer!(opts[:time], :time),
      return?: opts[:return],
      stack?: opts[:stack],
      io: opts[:io] || Process.group_leader()
    }
  end

  defp rate!(rate) do
    ElixirScope.Limits.max_rate!(rate)
  rescue
    ArgumentError -> Args.bad!(:limit, rate, "a count or a rate {n, ms} of positive integers")
  end

  defp start_watch(pattern, target, opts) do
    owns? = own_capture(opts)

    spec = %{
      id: __MODULE__,
      start: {GenServer, :start_link, [__MODULE__, {pattern, target, opts}]},
      restart: :temporary,
      shutdown: 5_000,
      modules: [__MODULE__]
    }

    case DynamicSupervisor.start_child(ElixirScope.Supervisor, spec) do
      {:ok, pid} ->
        {:ok, pid}

      {:error, reason} ->
        if owns?, do: ElixirScope.stop()
        {:error, reason}
    end
  end

  # Starts a capture when none runs (capped in rate, and in time at a minute past the
  # watch's); true when this watch started it. The server stops it when its last watch ends.
  defp own_capture(opts) do
    case ElixirScope.start(@own_capture ++ [max_time: opts.time + 60_000]) do
      {:ok, server} -> GenServer.call(server, :by_watch) == :ok
      {:error, :already_running} -> false
    end
  end

  @impl true
  def init({pattern, target, opts}) do
    server = Process.whereis(Server)

    with true <- is_pid(server) || {:error, :not_running},
         %Store{} = store <- GenServer.call(server, :store),
         # Only what happens from now on is printed.
         after_seq = Store.stats(store).last_seq,
         :ok <-
           GenServer.call(server, {:watch, self(), what(pattern, target, opts), opts.io}, 60_000) do
      Process.monitor(server)
      if is_pid(opts.io), do: Process.monitor(opts.io)
      Process.send_after(self(), :time_up, opts.time)
      send(self(), :poll)

      s =
        struct!(
          __MODULE__,
          Map.merge(opts, %{
            pattern: pattern,
            target: target,
            store: store,
            server: server,
            after_seq: after_seq,
            stacks_after: after_seq,
            started: System.monotonic_time(:nanosecond)
          })
        )

      Store.record_control(store, %{
        event: :watch_started,
        pattern: pattern.source,
        target: target,
        count: s.count,
        rate: s.rate,
        time: s.time
      })

      say(s, "watching #{Pattern.describe(pattern)}#{of(target)}; #{limits(s)}")
      {:ok, s}
    else
      {:error, reason} -> {:stop, reason}
      other -> {:stop, other}
    end
  end

  defp what(%Pattern{kind: :calls} = p, nil, opts),
    do: {:calls, Pattern.mfa(p), opts.return?, opts.stack?}

  defp what(%Pattern{kind: :messages}, pid, _opts), do: {:messages, pid}

  defp of(nil), do: ""
  defp of(pid), do: " of #{inspect(pid)}#{registered(pid)}"

  defp limits(s) do
    [
      s.count && "stops after #{s.count} #{noun(s)}",
      s.rate && "over #{elem(s.rate, 0)} #{noun(s)} in #{elem(s.rate, 1)} ms",
      "after #{s.time} ms"
    ]
    |> Enum.reject(&(&1 in [nil, false]))
    |> Enum.join(", or ")
  end

  defp noun(%{pattern: %Pattern{kind: :calls}}), do: "calls"
  defp noun(_), do: "messages"

  @impl true
  def handle_call(:unwatch, _from, s) do
    # What came before is printed first (a page budget's worth), unless a limit stops it.
    case poll(s) do
      {:stop, why, s} -> {:stop, {:shutdown, why}, :ok, s}
      {_more?, s} -> {:stop, {:shutdown, :unwatch}, :ok, s}
    end
  end

  @impl true
  def handle_info(:poll, s) do
    case poll(s) do
      {:stop, why, s} ->
        {:stop, {:shutdown, why}, s}

      # More is waiting: polled again at once, after the messages already here.
      {true, s} ->
        send(self(), :poll)
        {:noreply, s}

      {false, s} ->
        Process.send_after(self(), :poll, @poll)
        {:noreply, s}
    end
  end

  def handle_info(:time_up, s) do
    case poll(s) do
      {:stop, why, s} -> {:stop, {:shutdown, why}, s}
      {_more?, s} -> {:stop, {:shutdown, {:time, s.time}}, s}
    end
  end

  # A persisted capture went on in a fresh store (its seqs continue).
  def handle_info({:store, store}, s), do: {:noreply, %{s | store: store}}

  def handle_info({:DOWN, _, :process, pid, _}, %{server: pid} = s) do
    why = Application.get_env(:elixir_scope, :stopped_by)
    {:stop, {:shutdown, {:capture_stopped, why}}, %{s | server: nil}}
  end

  def handle_info({:DOWN, _, :process, pid, _}, %{io: pid} = s),
    do: {:stop, {:shutdown, :io_closed}, %{s | io: nil}}

  def handle_info(_msg, s), do: {:noreply, s}

  @impl true
  def terminate(reason, s) do
    last? =
      try do
        s.server && GenServer.call(s.server, {:unwatch, self()}, 10_000) == :stop_capture
      catch
        :exit, _ -> false
      end

    why =
      case reason do
        {:shutdown, why} -> why
        other -> other
      end

    s = flush(s)
    say(s, "stopped after #{s.printed} #{noun(s)}: #{describe_stop(why, s)}")

    try do
      Store.record_control(s.store, %{event: :watch_stopped, why: why, printed: s.printed})
    rescue
      _ -> :ok
    end

    # The last watch of a capture a watch started stops it (its events stay queryable).
    if last?, do: ElixirScope.stop()
    :ok
  end

  defp describe_stop({:count, n}, _s), do: "the limit of #{n}"
  defp describe_stop({:rate, {n, ms}}, s), do: "more than #{n} #{noun(s)} in #{ms} ms"
  defp describe_stop({:time, ms}, _s), do: "#{ms} ms passed"
  defp describe_stop(:unwatch, _s), do: "unwatched"
  defp describe_stop(:io_closed, _s), do: "its output device is gone"

  defp describe_stop({:capture_stopped, {limit, value}}, _s),
    do: "the capture stopped: #{ElixirScope.Limits.describe(limit, value)}"

  defp describe_stop({:capture_stopped, _}, _s), do: "the capture stopped"
  defp describe_stop(other, _s), do: inspect(other)

  # One pass over what was captured since the last: prints matches, keeps the limits. A full
  # page is followed by the next one, up to a budget of pages; `{more?, s}`, or a stop.
  defp poll(s, pages \\ @pages_per_poll) do
    stats = Store.stats(s.store)
    upto = stats.published_seq
    s = skip_evicted(s, stats.evicted)

    {items, next} =
      case s.pattern.kind do
        :calls -> call_items(s, upto)
        :messages -> message_items(s, upto)
      end

    s = %{s | after_seq: next}

    case print(items, s) do
      {:stop, why, s} ->
        {:stop, why, flush(s)}

      s ->
        s = s |> callers(upto) |> flush()

        cond do
          s.closing != nil -> closed(tidy(s), next < upto)
          next < upto and pages > 1 -> poll(s, pages - 1)
          true -> {next < upto, tidy(s)}
        end
    end
  end

  # A ring-mode capture evicted events before this watch looked at them (it went round faster
  # than the watch polls): said in a line, never skipped silently.
  defp skip_evicted(s, evicted) when evicted > s.after_seq do
    text =
      "#{evicted - s.after_seq} events were evicted before this watch looked at them " <>
        "(overflow: :evict_oldest): matches among them are not printed"

    %{s | after_seq: evicted, out: [line_text(text) | s.out]}
  end

  defp skip_evicted(s, _evicted), do: s

  # The callers of printed calls (`stack: true`), one line each, found by their processes.
  defp callers(%{shown: shown} = s, _upto) when shown == %{}, do: s

  defp callers(s, upto) do
    Query.events(
      store: s.store,
      kind: :stack,
      pid: s.shown |> Map.values() |> Enum.uniq(),
      after_seq: s.stacks_after,
      before_seq: upto + 1
    )
    |> Enum.reduce(%{s | stacks_after: upto}, fn
      %{data: {call, frames}, pid: pid}, s when is_map_key(s.shown, call) and is_list(frames) ->
        text = "    callers of #{inspect(pid)}: " <> Enum.map_join(frames, " < ", &frame/1)
        %{s | out: [line_text(text) | s.out], shown: Map.delete(s.shown, call)}

      _, s ->
        s
    end)
  end

  # Forgets what a long watch no longer needs: processes without pending calls, and names and
  # pending calls of dead processes once there are many.
  defp tidy(s) do
    stacks = for {_pid, [_ | _]} = kv <- s.stacks, into: %{}, do: kv

    stacks =
      if map_size(stacks) > @max_pids,
        do: Map.filter(stacks, fn {pid, _} -> Process.alive?(pid) end),
        else: stacks

    names = if map_size(s.names) > @max_pids, do: %{}, else: s.names
    %{s | stacks: stacks, names: names}
  end

  # A closing watch stops once the returns of its printed calls are printed, or at its deadline.
  defp closed(%{closing: {why, deadline}} = s, more?) do
    # The returns and the callers of printed calls.
    awaited? = Enum.any?(Map.values(s.stacks), &Enum.member?(&1, true)) or s.shown != %{}

    if awaited? and System.monotonic_time(:millisecond) < deadline,
      do: {more?, s},
      else: {:stop, why, s}
  end

  # Calls, returns and exceptions of the watched functions, in order; calls tagged with
  # whether their arguments match.
  defp call_items(s, upto) do
    filters = [
      store: s.store,
      mfa: Pattern.mfa(s.pattern),
      after_seq: s.after_seq,
      before_seq: upto + 1
    ]

    case {s.return?, s.pattern.pattern} do
      # Matching calls alone: one native query gives them.
      {false, {ir, guard, names}} ->
        matches = DSL.run(filters ++ [kind: :call, limit: @page], :args, {ir, guard}, names)
        last = if length(matches) == @page, do: List.last(matches).event.seq, else: upto
        {Enum.map(matches, &{&1.event, true}), last}

      # With returns: every call is needed, to pair each return with its call.
      {_, pattern} ->
        kinds = if s.return?, do: [:call, :return, :exception], else: [:call]

        events = Query.events(filters ++ [kind: kinds, limit: @page])
        last = if length(events) == @page, do: List.last(events).seq, else: upto

        matched =
          case pattern do
            nil ->
              :all

            {ir, guard, names} ->
              filters = Keyword.put(filters, :before_seq, last + 1)

              DSL.run(filters ++ [kind: :call, select: :binds], :args, {ir, guard}, names)
              |> MapSet.new(& &1.seq)
          end

        {Enum.map(events, &{&1, matched == :all or &1.seq in matched}), last}
    end
  end

  # Messages sent or received that match, as they are or as a GenServer request: three
  # queries merged, up to where each of them is complete.
  defp message_items(s, upto) do
    filters = [
      store: s.store,
      pid: s.target,
      kind: [:send, :receive, :send_to_dead],
      after_seq: s.after_seq,
      before_seq: upto + 1,
      limit: @page
    ]

    pages =
      for {ir, guard, names} <- s.pattern.pattern,
          do: DSL.run(filters, :message, {ir, guard}, names)

    last =
      pages
      |> Enum.filter(&(length(&1) == @page))
      |> Enum.map(&List.last(&1).event.seq)
      |> Enum.min(fn -> upto end)

    items =
      pages
      |> Enum.concat()
      |> Enum.map(& &1.event)
      |> Enum.filter(&(&1.seq <= last))
      |> Enum.uniq_by(& &1.seq)
      |> Enum.sort_by(& &1.seq)
      |> Enum.map(&{&1, true})

    {items, last}
  end

  defp print([], s), do: s

  defp print([{event, matched?} | rest], s) do
    case step(event, matched?, s) do
      {:stop, _, _} = stop -> stop
      s -> print(rest, s)
    end
  end

  defp step(%{kind: :call} = e, matched?, s) do
    # A closing watch prints no new call (nor, so, its return).
    matched? = matched? and s.closing == nil

    s =
      if s.return?,
        do: %{s | stacks: Map.update(s.stacks, e.pid, [matched?], &[matched? | &1])},
        else: s

    if matched?, do: match(e, s), else: s
  end

  defp step(%{kind: kind} = e, _, s) when kind in [:return, :exception] do
    case Map.get(s.stacks, e.pid, []) do
      [matched? | rest] ->
        s = %{s | stacks: Map.put(s.stacks, e.pid, rest)}
        if matched? and s.return?, do: line(e, s), else: s

      [] ->
        # Its call came before the watch did.
        s
    end
  end

  defp step(_e, true, %{closing: {_, _}} = s), do: s
  defp step(e, true, s), do: match(e, s)

  # A match: printed unless it breaks the rate; the count limit stops right after it.
  defp match(e, s) do
    cond do
      s.rate && over_rate?(e.ts, s) ->
        {:stop, {:rate, s.rate}, s}

      true ->
        s = line(e, %{s | printed: s.printed + 1, recent: recent(e.ts, s)})
        s = if s.stack?, do: await_callers(s, e), else: s

        cond do
          s.count == nil or s.printed < s.count ->
            s

          # Its return is printed before the watch stops (within a second).
          (s.return? or s.stack?) and e.kind == :call ->
            %{s | closing: {{:count, s.count}, deadline()}}

          true ->
            {:stop, {:count, s.count}, s}
        end
    end
  end

  # At most 64 calls await their callers: an older one is given up on.
  defp await_callers(s, e) do
    shown =
      if map_size(s.shown) >= 64,
        do: Map.delete(s.shown, Enum.min(Map.keys(s.shown))),
        else: s.shown

    %{s | shown: Map.put(shown, e.seq, e.pid)}
  end

  defp deadline, do: System.monotonic_time(:millisecond) + 1_000

  # The timestamps of the last `n` printed matches, newest first.
  defp recent(_ts, %{rate: nil}), do: []
  defp recent(ts, %{rate: {n, _}, recent: r}), do: Enum.take([ts | r], n)

  # A match at `ts` makes n + 1 within the window.
  defp over_rate?(ts, %{rate: {n, ms}, recent: r}),
    do: length(r) == n and ts - List.last(r) < ms * 1_000_000

  defp line(e, s) do
    {name, s} = name_of(e.pid, s)
    time = :erlang.float_to_binary((e.ts - s.started) / 1.0e9, decimals: 3)
    %{s | out: [line_text("+#{time}s #{inspect(e.pid)}#{name} #{body(e)}") | s.out]}
  end

  # Writes the lines of this poll, in one request to the device.
  defp flush(%{out: []} = s), do: s

  defp flush(s) do
    write(s, Enum.reverse(s.out))
    %{s | out: []}
  end

  defp body(%{kind: :call, mfa: {m, f, _}, data: args}) when is_list(args),
    do:
      "#{Exception.format_mfa(m, f, 0) |> String.replace_suffix("/0", "")}(#{Enum.map_join(args, ", ", &show/1)})"

  defp body(%{kind: :return, mfa: {m, f, a}, data: value}),
    do: "#{Exception.format_mfa(m, f, a)} -> #{show(value)}"

  defp body(%{kind: :exception, mfa: {m, f, a}, data: {class, reason}}),
    do: "#{Exception.format_mfa(m, f, a)} raised #{Exception.format_banner(class, reason)}"

  defp body(%{kind: :receive, data: msg}), do: "<- #{show(msg)}"

  defp body(%{kind: kind, peer: to, data: msg}) when kind in [:send, :send_to_dead],
    do: "-> #{inspect(to)}#{if kind == :send_to_dead, do: " (dead)", else: ""} #{show(msg)}"

  defp body(e), do: show(e.data)

  defp show(term), do: inspect(term, @inspect)

  # "'Elixir.MyApp.Web':show/2" -> "MyApp.Web.show/2", as Elixir writes a frame (an
  # anonymous function as "anonymous fn/3 in Enum.each/2"); no atom is made.
  defp frame(text) when is_binary(text) do
    with true <- String.valid?(text) || :invalid,
         [_, mod, fun, arity] <- Regex.run(~r/^'?([^':]+)'?:'?(.+?)'?\/(\d+)$/, text),
         mod when mod != nil <- ElixirScope.UI.View.existing_atom(mod),
         fun when fun != nil <- ElixirScope.UI.View.existing_atom(fun) do
      Exception.format_mfa(mod, fun, String.to_integer(arity))
    else
      :invalid -> inspect(text)
      _ -> text
    end
  end

  defp frame(other), do: inspect(other)

  defp name_of(pid, s) do
    case s.names do
      %{^pid => name} -> {name, s}
      names -> remember(names, pid, registered(pid), s)
    end
  end

  defp remember(names, pid, name, s), do: {name, %{s | names: Map.put(names, pid, name)}}

  defp registered(pid) do
    case Process.info(pid, :registered_name) do
      {:registered_name, name} when is_atom(name) and name != [] -> " (#{inspect(name)})"
      _ -> ""
    end
  end

  defp say(s, text), do: write(s, [line_text(text)])

  defp line_text(text) do
    text =
      if byte_size(text) > @max_line and String.length(text) > @max_line,
        do: String.slice(text, 0, @max_line) <> "…",
        else: text

    ["[ElixirScope.watch] ", text, ?\n]
  end

  defp write(%{io: nil}, _lines), do: :ok

  defp write(s, lines) do
    IO.write(s.io, lines)
  rescue
    # One bad line does not cost the others: written one by one.
    _ -> if length(lines) > 1, do: Enum.each(lines, &write(s, [&1]))
  catch
    _, _ -> :ok
  end
end
