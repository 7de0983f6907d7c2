defmodule ElixirScope.Query.Summary do
  @moduledoc """
  What happened, in words: a few sentences about a process (or the whole capture) over a window,
  every number in them taken from the query API (state changes from its states, messages by tag
  from `ElixirScope.Query.group_by/2`, calls and their durations from
  `ElixirScope.Query.Aggregate.durations/2`, crashes from its exits and its supervisors'
  events). Computed from the store and its indexes, never guessed.

      ElixirScope.Query.summarize(MyApp.Counter)
      #=> "MyApp.Counter (#PID<0.201.0>) had 5 state changes between 10:02:01.120 and
      #    10:02:04.004. :count increased from 0 to 10. It received 3 {:increment, _} and
      #    2 {:status_update, _}. It called Repo.get/2 4 times (max 12.0 ms). It crashed once:
      #    ArgumentError in handle_call/3, restarted by MyApp.Sup."

  ## Examples

      iex> ElixirScope.Query.Summary.summarize(:all, :all, store: ElixirScope.Store.new!())
      "No events were captured."
  """

  alias ElixirScope.{Event, Format, Query, Store, StateDiff}
  alias ElixirScope.Query.Aggregate

  @typedoc "`:all`, or `{from, to}`: monotonic nanoseconds (an event's `ts`) or `DateTime`s."
  @type window :: :all | {integer() | DateTime.t(), integer() | DateTime.t()}

  @doc """
  A summary of `target` (a pid or a name, as queries take it, or `:all`) over `window`. Takes
  `:store`.
  """
  @spec summarize(ElixirScope.Query.Names.process() | :all, window(), keyword()) :: String.t()
  def summarize(target, window \\ :all, opts \\ []) do
    opts = ElixirScope.Options.validate!(opts, store: nil)
    store = Query.store!(opts[:store])
    bounds = bounds!(window, store)

    case target do
      :all -> capture(store, bounds)
      process -> one(Query.Names.resolve!(process, store, "target"), store, bounds)
    end
  end

  defp bounds!(:all, _store), do: []

  defp bounds!({from, to}, store), do: [since: ts!(from, store), until: ts!(to, store)]

  defp bounds!(other, _store) do
    raise ArgumentError,
          "invalid window #{inspect(other)}: expected :all or {from, to} (monotonic ns or DateTime)"
  end

  defp ts!(%DateTime{} = dt, store), do: Store.from_datetime(store, dt)
  defp ts!(ns, _store) when is_integer(ns), do: ns

  defp ts!(other, _store),
    do:
      raise(ArgumentError, "invalid time #{inspect(other)}: expected monotonic ns or a DateTime")

  # A process.

  defp one(pid, store, bounds) do
    o = [store: store] ++ bounds
    name = name_of(pid, store)
    who = if name, do: "#{inspect(name)} (#{inspect(pid)})", else: inspect(pid)
    states = Query.events(o ++ [pid: pid, kind: :state])
    changes = changes(states)

    [
      states_sentence(who, changes, store),
      numbers_sentence(states),
      received_sentence(pid, o),
      calls_sentence(pid, o),
      crash_sentence(pid, store, o)
    ]
    |> Enum.reject(&(&1 in [nil, ""]))
    |> Enum.join(" ")
  end

  # The states that differ from the one before them (the first counts as the start).
  defp changes([]), do: []

  defp changes([first | rest]) do
    {changed, _} =
      Enum.flat_map_reduce(rest, first, fn e, before ->
        if StateDiff.diff(before.data, e.data).equal, do: {[], e}, else: {[e], e}
      end)

    changed
  end

  defp states_sentence(who, [], _store), do: "#{who} had no state changes recorded."

  defp states_sentence(who, changes, store) do
    first = List.first(changes)
    last = List.last(changes)
    n = length(changes)

    "#{who} had #{plural(n, "state change")} between #{clock(store, first.ts)} and #{clock(store, last.ts)}."
  end

  # Top-level numeric fields of map states: how they moved from the first state to the last.
  defp numbers_sentence([first | _] = states) when length(states) > 1 do
    last = List.last(states)

    with %{} = a <- first.data, %{} = b <- last.data do
      for {k, v0} <- Map.delete(a, :__struct__),
          v1 = Map.get(b, k),
          is_number(v0) and is_number(v1) and v0 != v1 do
        "#{inspect(k)} #{if v1 > v0, do: "increased", else: "decreased"} from #{v0} to #{v1}."
      end
      |> Enum.join(" ")
    else
      _ -> nil
    end
  end

  defp numbers_sentence(_), do: nil

  defp received_sentence(pid, o) do
    case Aggregate.top(o ++ [pid: pid, kind: :receive], :tag, 5) do
      [] ->
        nil

      tags ->
        "It received " <> and_list(Enum.map(tags, fn {tag, n} -> "#{n} #{shape(tag)}" end)) <> "."
    end
  end

  defp shape(:"$gen_call"), do: "calls"
  defp shape(:"$gen_cast"), do: "casts"
  defp shape(nil), do: "untagged messages"
  defp shape(tag), do: "{#{inspect(tag)}, _}"

  defp calls_sentence(pid, o) do
    durations = Aggregate.durations(o ++ [pid: pid], :mfa)

    case durations |> Enum.sort_by(fn {_, d} -> -d.count end) |> Enum.take(3) do
      [] ->
        nil

      top ->
        "It called " <>
          and_list(
            Enum.map(top, fn {{m, f, a}, d} ->
              "#{ElixirScope.UI.View.mfa({m, f, a}) || inspect({m, f, a})} #{times(d.count)} (max #{Format.duration(d.max)})"
            end)
          ) <> "."
    end
  end

  defp crash_sentence(pid, store, o) do
    crashes = Query.events(o ++ [pid: pid, kind: :exit]) |> Enum.filter(&abnormal?/1)

    case crashes do
      [] ->
        nil

      [e | _] ->
        where =
          case Query.why_crashed(pid, store: store) do
            {:ok, %{exception: %{__struct__: mod}, stacktrace: [{_, f, a, _} | _]}} ->
              ": #{inspect(mod)} in #{f}/#{if is_list(a), do: length(a), else: a}"

            _ ->
              ": #{inspect(e.data, limit: 5)}"
          end

        restarted =
          case restarted_by(pid, e, store) do
            nil -> ""
            sup -> ", restarted by #{inspect(name_of(sup, store) || sup)}"
          end

        "It crashed #{times(length(crashes))}#{where}#{restarted}."
    end
  end

  # The supervisor that restarted `pid` after `exit`: a traced process that received the exit
  # signal as a message (supervisors trap exits) soon after it, and whose states show the
  # restart. Bounded: the 2,000 events that follow the exit.
  defp restarted_by(pid, exit, store) do
    Query.events(store: store, kind: :receive, after_seq: exit.seq - 1, limit: 2_000)
    |> Enum.filter(&match?({:EXIT, ^pid, _}, &1.data))
    |> Enum.map(& &1.pid)
    |> Enum.uniq()
    |> Enum.find(fn sup ->
      Enum.any?(
        safe_supervisor_events(sup, store),
        &(&1.data.action == :restarted and &1.data.old_pid == pid)
      )
    end)
  end

  defp safe_supervisor_events(sup, store) do
    Query.supervisor_events(sup, store: store)
  rescue
    ArgumentError -> []
  end

  # The whole capture.

  defp capture(store, bounds) do
    o = [store: store] ++ bounds
    total = Aggregate.count(o)

    if total == 0 do
      "No events were captured."
    else
      events = Query.events(o ++ [limit: 1]) ++ Query.events(o ++ [limit: 1, order: :desc])
      by_pid = Aggregate.group_by(o, :pid) |> Map.delete(nil)
      busiest = by_pid |> Enum.sort_by(fn {_, n} -> -n end) |> Enum.take(3)
      crashes = Query.events(o ++ [kind: :exit]) |> Enum.filter(&abnormal?/1)

      [
        "#{plural(total, "event")} of #{plural(map_size(by_pid), "process", "processes")} between " <>
          "#{clock(store, hd(events).ts)} and #{clock(store, List.last(events).ts)}.",
        "The busiest: " <>
          and_list(Enum.map(busiest, fn {p, n} -> "#{label(p, store)} (#{n})" end)) <> ".",
        case crashes do
          [] ->
            "No process crashed."

          cs ->
            "#{plural(length(cs), "process", "processes")} crashed: " <>
              and_list(Enum.map(Enum.take(cs, 5), &label(&1.pid, store))) <> "."
        end
      ]
      |> Enum.join(" ")
    end
  end

  # Helpers.

  defp abnormal?(%Event{data: reason}),
    do: reason not in [:normal, :shutdown] and not match?({:shutdown, _}, reason)

  defp label(pid, store) do
    case name_of(pid, store) do
      nil -> inspect(pid)
      name -> inspect(name)
    end
  end

  defp name_of(pid, store) do
    Query.events(store: store, pid: pid, kind: [:register, :traced])
    |> Enum.reduce(nil, fn
      %Event{kind: :register, data: n}, _ when is_atom(n) -> n
      %Event{kind: :traced, data: {_, n}}, acc when is_atom(n) and n != nil -> acc || n
      _, acc -> acc
    end)
  end

  defp clock(store, ts),
    do:
      store
      |> Store.to_datetime(ts)
      |> DateTime.to_time()
      |> Time.truncate(:millisecond)
      |> Time.to_string()

  defp plural(1, word), do: "1 #{word}"
  defp plural(n, word), do: "#{n} #{word}s"
  defp plural(1, word, _), do: "1 #{word}"
  defp plural(n, _word, words), do: "#{n} #{words}"

  defp times(1), do: "once"
  defp times(2), do: "twice"
  defp times(n), do: "#{n} times"

  defp and_list([one]), do: one
  defp and_list(items), do: Enum.join(Enum.drop(items, -1), ", ") <> " and " <> List.last(items)
end
