defmodule Mix.Tasks.ElixirScope.Inspect do
  @shortdoc "Summarizes a saved or persisted ElixirScope trace"

  @moduledoc """
  Summarizes a trace written by `ElixirScope.save/2` or `ElixirScope.start(persist: ...)`:
  its time range, events by kind, busiest processes, most called functions, message tags, size
  on disk, drops and damage. Sealed segments answer from their index footers, without reading
  their events (see `ElixirScope.Persist.summary/2`).

      mix elixir_scope.inspect PATH [--top N]

  `PATH` is a trace directory or one segment file. Reading shows its progress on standard error
  for traces over 16 MiB. Nothing in the trace is trusted: a damaged file is reported, not
  crashed on, and no atom is created from it.

  ## Options

    * `--top N` - how many processes, functions and tags to list (default 5).
  """

  use Mix.Task

  alias ElixirScope.Persist

  @progress_from 16 * 1024 * 1024

  @impl true
  def run(args) do
    {opts, paths, invalid} = OptionParser.parse(args, strict: [top: :integer])

    case {paths, invalid, Keyword.get(opts, :top, 5)} do
      {[path], [], top} when top > 0 -> inspect_trace(path, top)
      _ -> Mix.raise("usage: mix elixir_scope.inspect PATH [--top N] (N > 0)")
    end
  end

  defp inspect_trace(path, top) do
    {:ok, _} = Application.ensure_all_started(:elixir_scope)

    case Persist.summary(path, progress: &progress/2) do
      {:ok, summary} -> Mix.shell().info(format(Path.expand(path), summary, top))
      {:error, reason} -> Mix.raise("cannot open #{path}: #{ElixirScope.Error.describe(reason)}")
    end
  end

  defp progress(read, total) when total >= @progress_from do
    pct = div(read * 100, max(total, 1))
    IO.write(:stderr, "\rreading #{pct}% (#{mib(read)} of #{mib(total)})")
    if read >= total, do: IO.write(:stderr, "\n")
  end

  defp progress(_read, _total), do: :ok

  @doc false
  # The summary of a trace (see ElixirScope.Persist.summary/2), as text.
  @spec format(String.t(), Persist.summary(), pos_integer()) :: String.t()
  def format(path, s, top) do
    [
      "trace      #{path}",
      "segments   #{s.segments}, #{mib(s.bytes)} on disk (#{per_event(s)} per event)" <>
        footers_note(s),
      "events     #{s.events}" <> seq_note(s),
      "time       " <> time_range(s),
      "processes  #{map_size(s.pids)}, #{s.state_changes} state changes",
      "dropped    #{s.dropped} events, #{s.truncated} payloads truncated at capture",
      damage(s),
      "",
      "by kind",
      table(Enum.sort_by(s.kinds, fn {_, n} -> -n end), &to_string/1),
      "",
      "busiest processes",
      table(s.pids |> Enum.sort_by(fn {_, n} -> -n end) |> Enum.take(top), &inspect/1),
      "",
      "most called",
      table(s.calls |> Enum.sort_by(fn {_, n} -> -n end) |> Enum.take(top), &mfa/1),
      "",
      "message tags",
      table(s.tags |> Enum.sort_by(fn {_, n} -> -n end) |> Enum.take(top), &inspect/1)
    ]
    |> List.flatten()
    |> Enum.reject(&is_nil/1)
    |> Enum.join("\n")
  end

  defp footers_note(%{from_footers: n, segments: n}), do: ""

  defp footers_note(%{from_footers: n, segments: all}),
    do: ", #{all - n} read through (no footer)"

  defp seq_note(%{first: {1, _}}), do: ""
  defp seq_note(%{first: nil}), do: ""

  defp seq_note(%{first: {seq, _}}),
    do: " (from seq #{seq} of the capture: older segments were deleted)"

  defp time_range(%{first: nil}), do: "-"

  defp time_range(%{first: {_, t0}, last: {_, t1}, clock: clock}) do
    span = System.convert_time_unit(t1 - t0, :nanosecond, :millisecond)

    case clock do
      {mono, sys} ->
        at = fn t -> DateTime.from_unix!(t - mono + sys, :nanosecond) end
        "#{at.(t0)} .. #{at.(t1)} (#{span} ms)"

      nil ->
        "#{span} ms (no wall clock recorded)"
    end
  end

  defp damage(%{torn: [], damaged: []}), do: nil

  defp damage(s) do
    torn = if s.torn != [], do: ["torn or corrupt tails in #{Enum.join(s.torn, ", ")}"], else: []

    skipped =
      if s.damaged != [],
        do: [
          "segments not counted (unreadable, or repeating others): #{Enum.join(s.damaged, ", ")}"
        ],
        else: []

    "damage     " <> Enum.join(torn ++ skipped, "; ")
  end

  defp mfa({m, f, a}) when is_atom(m) and is_atom(f), do: Exception.format_mfa(m, f, a)
  defp mfa({m, f, a}), do: "#{m}.#{f}/#{a}"

  defp table([], _show), do: "  -"

  defp table(rows, show) do
    Enum.map(rows, fn {k, n} -> "  " <> String.pad_trailing(show.(k), 40) <> " #{n}" end)
  end

  defp per_event(%{events: 0}), do: "-"
  defp per_event(s), do: "#{div(s.bytes, s.events)} B"

  defp mib(bytes), do: :io_lib.format("~.1f MiB", [bytes / 1_048_576]) |> to_string()
end
