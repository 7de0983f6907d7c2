defmodule ElixirScope.Format do
  @moduledoc """
  Query results as text a person reads in IEx: a timeline of events, event rates over time and
  call durations, with units.

      ElixirScope.Query.print_timeline(Counter)
      #     +0.000 ms  #1 traced Counter traced from here
      #     +0.031 ms  #2 receive Counter <- {:"$gen_cast", :inc}
      #     ...

  Every function returns a string (`IO.puts/1` it); none queries more than it is given, except
  that times are shown on the capture's clock (`store:`, default the current capture).
  """

  alias ElixirScope.{Event, Query, Store}

  @doc """
  One line per event: the time since the first event (or since `since:`, monotonic ns) and the
  event as `ElixirScope.Event.describe/2` says it, a registered process shown by its name
  (`names:`, a map from pid to name, else found in the events and the running system) and
  other pids without their `#PID` wrapping, cut to `:width` columns (default: the
  terminal's, else 120). References are shown short (`#Ref<…1234>`, their last digits).

  ## Examples

      iex> e = %ElixirScope.Event{seq: 1, ts: 2_500_000, kind: :receive, pid: self(), data: {:ping, make_ref()}}
      iex> line = ElixirScope.Format.timeline([e], since: 0, width: 80, names: %{})
      iex> line =~ "+2.500 ms" and line =~ "#Ref<…"
      true
  """
  @spec timeline([Event.t()], keyword()) :: String.t()
  def timeline(events, opts \\ []) when is_list(events) do
    opts = ElixirScope.Options.validate!(opts, since: nil, width: nil, names: nil, limit: 8)
    width = opts[:width] || columns()

    case events do
      [] ->
        "(no events)"

      [first | _] ->
        t0 = opts[:since] || first.ts
        names = opts[:names] || names(events)

        Enum.map_join(events, "\n", fn e ->
          at = String.pad_leading(relative(e.ts - t0), 12)
          body = e |> Event.describe(limit: opts[:limit]) |> name_pids(names) |> short_refs()
          clip("#{at}  #{body}", width)
        end)
    end
  end

  @doc """
  The buckets of `ElixirScope.Query.rate/2` as lines: each bucket's start on the capture's
  wall clock (`HH:MM:SS.mmm`, UTC), its count and a bar scaled to the largest count.

  ## Examples

      iex> store = ElixirScope.Store.new!()
      iex> text = ElixirScope.Format.rate([{0, 3}, {1_000_000, 6}], store: store)
      iex> [_, six] = String.split(text, "\\n")
      iex> six =~ ~r/\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\s+6 ██████████/
      true
  """
  @spec rate([{integer(), non_neg_integer()}], keyword()) :: String.t()
  def rate(buckets, opts \\ []) when is_list(buckets) do
    opts = ElixirScope.Options.validate!(opts, store: nil, bar: 20)
    store = Query.store!(opts[:store])
    max = buckets |> Enum.map(&elem(&1, 1)) |> Enum.max(fn -> 0 end)
    digits = max |> Integer.to_string() |> String.length()

    Enum.map_join(buckets, "\n", fn {t, n} ->
      bar = if max == 0, do: 0, else: round(n / max * opts[:bar])

      clock(store, t) <>
        "  " <>
        String.pad_leading(Integer.to_string(n), digits) <> " " <> String.duplicate("█", bar)
    end)
    |> case do
      "" -> "(no events)"
      text -> text
    end
  end

  @doc """
  Call durations (`ElixirScope.Query.durations/2`) with units: one line for one set of
  statistics, a line per key (longest average first) for a map of them.

  ## Examples

      iex> ElixirScope.Format.durations(%{count: 3, min: 1_500, max: 2_000_000, avg: 700_500.0})
      "3 calls: min 1.5 µs, avg 700.5 µs, max 2.00 ms"
  """
  @spec durations(map() | nil) :: String.t()
  def durations(nil), do: "no completed calls"

  def durations(%{count: count, min: min, max: max, avg: avg}) do
    "#{count} call#{if count == 1, do: "", else: "s"}: min #{duration(min)}, " <>
      "avg #{duration(avg)}, max #{duration(max)}"
  end

  def durations(by_key) when is_map(by_key) do
    by_key
    |> Enum.sort_by(fn {_, %{avg: avg}} -> -avg end)
    |> Enum.map_join("\n", fn {key, stats} -> "#{key_text(key)}  #{durations(stats)}" end)
  end

  @doc """
  A duration in nanoseconds, in the unit that reads best.

  ## Examples

      iex> Enum.map([850, 1_500, 2_000_000, 3_250_000_000, 125_000_000_000], &ElixirScope.Format.duration/1)
      ["850 ns", "1.5 µs", "2.00 ms", "3.25 s", "2 min 5 s"]
  """
  @spec duration(number()) :: String.t()
  def duration(ns) when is_number(ns) and ns < 1_000, do: "#{round(ns)} ns"
  def duration(ns) when is_number(ns) and ns < 1_000_000, do: "#{Float.round(ns / 1_000, 1)} µs"

  def duration(ns) when is_number(ns) and ns < 1_000_000_000,
    do: "#{:erlang.float_to_binary(ns / 1_000_000, decimals: 2)} ms"

  def duration(ns) when is_number(ns) and ns < 60_000_000_000,
    do: "#{:erlang.float_to_binary(ns / 1_000_000_000, decimals: 2)} s"

  def duration(ns) when is_number(ns) do
    s = round(ns / 1_000_000_000)
    "#{div(s, 60)} min #{rem(s, 60)} s"
  end

  # "+12.345 ms" for less than a second, "+1.234 s" beyond.
  defp relative(ns) when ns < 1_000_000_000,
    do: "+" <> :erlang.float_to_binary(ns / 1_000_000, decimals: 3) <> " ms"

  defp relative(ns), do: "+" <> :erlang.float_to_binary(ns / 1_000_000_000, decimals: 3) <> " s"

  defp clock(store, ts) do
    dt = Store.to_datetime(store, ts)
    dt |> DateTime.truncate(:millisecond) |> DateTime.to_time() |> Time.to_iso8601()
  rescue
    _ -> relative(ts)
  end

  # Registered names of the events' processes: from the events (register, traced), else the
  # live process's name.
  defp names(events) do
    from_events =
      for %Event{kind: kind, pid: pid, data: data} <- events,
          name = name_in(kind, data),
          into: %{},
          do: {pid, name}

    events
    |> Enum.flat_map(&[&1.pid, &1.peer])
    |> Enum.filter(&(is_pid(&1) and node(&1) == node()))
    |> Enum.uniq()
    |> Enum.reduce(from_events, fn pid, acc ->
      case Map.has_key?(acc, pid) || Process.info(pid, :registered_name) do
        {:registered_name, name} when is_atom(name) -> Map.put(acc, pid, name)
        _ -> acc
      end
    end)
  end

  defp name_in(:register, name) when is_atom(name), do: name
  defp name_in(:traced, {_, name}) when is_atom(name) and name != nil, do: name
  defp name_in(_, _), do: nil

  # A registered process shows as its name, any other pid without its `#PID` wrapping.
  defp name_pids(text, names) do
    text =
      Enum.reduce(names, text, fn {pid, name}, acc ->
        String.replace(acc, inspect(pid), inspect(name))
      end)

    Regex.replace(~r/#PID(<[\d.]+>)/, text, "\\1")
  end

  defp short_refs(text),
    do: Regex.replace(~r/#Reference<[\d.]*?(\d{1,4})>/, text, "#Ref<…\\1>")

  defp key_text({m, f, a}) when is_atom(m) and is_atom(f) and is_integer(a),
    do: Exception.format_mfa(m, f, a)

  defp key_text(key), do: inspect(key)

  defp clip(line, width) do
    if String.length(line) > width,
      do: String.slice(line, 0, max(width - 1, 1)) <> "…",
      else: line
  end

  defp columns do
    case :io.columns() do
      {:ok, n} when n > 20 -> n
      _ -> 120
    end
  end
end
