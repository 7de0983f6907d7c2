defmodule Mix.Tasks.ElixirScope.Inspect do
  @shortdoc "Summarizes a saved or persisted ElixirScope trace"

  @moduledoc """
  Summarizes a trace written by `ElixirScope.save/2` or `ElixirScope.start(persist: ...)`:
  its time range, events by kind, busiest processes, size on disk, drops and damage.

      mix elixir_scope.inspect PATH [--top N]

  `PATH` is a trace directory or one segment file. Loading shows its progress on standard error
  for traces over 16 MiB. Nothing in the trace is trusted: a damaged file is reported, not
  crashed on, and no atom is created from it.

  ## Options

    * `--top N` - how many of the busiest processes to list (default 5).
  """

  use Mix.Task

  alias ElixirScope.{Persist, Query, Store}

  @progress_from 16 * 1024 * 1024

  @impl true
  def run(args) do
    {opts, paths, invalid} = OptionParser.parse(args, strict: [top: :integer])

    case {paths, invalid} do
      {[path], []} -> inspect_trace(path, Keyword.get(opts, :top, 5))
      _ -> Mix.raise("usage: mix elixir_scope.inspect PATH [--top N]")
    end
  end

  defp inspect_trace(path, top) do
    {:ok, _} = Application.ensure_all_started(:elixir_scope)

    case ElixirScope.open(path, progress: &progress/2) do
      {:ok, store} -> Mix.shell().info(summary(store, top))
      {:error, reason} -> Mix.raise("cannot open #{path}: #{reason}")
    end
  end

  defp progress(read, total) when total >= @progress_from do
    pct = div(read * 100, max(total, 1))
    IO.write(:stderr, "\rloading #{pct}% (#{mib(read)} of #{mib(total)})")
    if read >= total, do: IO.write(:stderr, "\n")
  end

  defp progress(_read, _total), do: :ok

  @doc false
  # The summary of an opened store, as text.
  @spec summary(Store.t(), pos_integer()) :: String.t()
  def summary(store, top) do
    info = Persist.info(store)
    stats = Store.stats(store)
    first = List.first(Query.events(store: store, limit: 1))
    last = List.first(Query.events(store: store, limit: 1, order: :desc))
    by_kind = Query.group_by([store: store], :kind)
    by_pid = Query.group_by([store: store], :pid)

    [
      "trace      #{info.path}",
      "segments   #{info.segments}, #{mib(info.bytes)} on disk (#{per_event(info)} per event)",
      "events     #{stats.events}" <> seq_note(info),
      "time       " <> time_range(store, info, first, last),
      "processes  #{map_size(by_pid)}",
      "dropped    #{info.dropped} events, #{info.truncated} payloads truncated at capture",
      damage(info),
      "",
      "by kind",
      table(Enum.sort_by(by_kind, fn {_, n} -> -n end), &to_string/1),
      "",
      "busiest processes",
      table(by_pid |> Enum.sort_by(fn {_, n} -> -n end) |> Enum.take(top), &inspect/1)
    ]
    |> List.flatten()
    |> Enum.reject(&is_nil/1)
    |> Enum.join("\n")
  end

  defp seq_note(%{first_seq: 1}), do: ""
  defp seq_note(%{first_seq: 0}), do: ""

  defp seq_note(info),
    do: " (from seq #{info.first_seq} of the capture: older segments were deleted)"

  defp time_range(_store, _info, nil, _), do: "-"

  defp time_range(store, info, first, last) do
    span = System.convert_time_unit(last.ts - first.ts, :nanosecond, :millisecond)

    if info.clock do
      "#{Store.to_datetime(store, first.ts)} .. #{Store.to_datetime(store, last.ts)} (#{span} ms)"
    else
      "#{span} ms (no wall clock recorded)"
    end
  end

  defp damage(%{torn: [], gaps: 0, unknown_words: 0}), do: nil

  defp damage(info) do
    "damage     torn tails in #{inspect(info.torn)}, #{info.gaps} events missing, " <>
      "#{info.unknown_words} fields without a symbol"
  end

  defp table(rows, show) do
    Enum.map(rows, fn {k, n} -> "  " <> String.pad_trailing(show.(k), 28) <> " #{n}" end)
  end

  defp per_event(%{events: 0}), do: "-"
  defp per_event(info), do: "#{div(info.bytes, info.events)} B"

  defp mib(bytes), do: :io_lib.format("~.1f MiB", [bytes / 1_048_576]) |> to_string()
end
