defmodule Bench.Harness do
  @moduledoc """
  A small benchmark harness (Benchee is out of reach): warm-up, several rounds with the variants
  interleaved so that drift of the machine hits all of them alike, median and spread.
  """

  @doc "The header every table starts with: machine, OTP, Elixir, date."
  def header(title) do
    {cpu, cores} = cpu()

    IO.puts("""
    # #{title}
    machine: #{cpu}, #{cores} cores, #{mem_gib()} GiB | OTP #{System.otp_release()} (erts #{:erlang.system_info(:version)}) | Elixir #{System.version()} | #{Date.utc_today()}
    """)
  end

  defp cpu do
    model =
      case File.read("/proc/cpuinfo") do
        {:ok, text} ->
          text |> String.split("\n") |> Enum.find_value("unknown cpu", &model_name/1)

        _ ->
          "unknown cpu"
      end

    {model, System.schedulers_online()}
  end

  defp model_name("model name" <> rest),
    do: rest |> String.trim_leading() |> String.trim_leading(":") |> String.trim()

  defp model_name(_), do: nil

  defp mem_gib do
    case File.read("/proc/meminfo") do
      {:ok, "MemTotal:" <> rest} ->
        [kb | _] = rest |> String.trim() |> String.split()
        div(String.to_integer(kb), 1024 * 1024)

      _ ->
        "?"
    end
  end

  @doc """
  Runs `variants` (a list of `{name, fun}`; `fun.()` returns `{microseconds, extra_map}`)
  `rounds` times after one warm-up round, rotating their order each round. Returns
  `%{name => %{median: us, min: us, max: us, extra: last_extra, cpu: median_cpu}}`, where
  `median_cpu` is the median of the rounds' `extra_map[:cpu_us]` (nil when a variant does not
  report it).
  """
  def run(variants, rounds) do
    Enum.each(variants, fn {_, f} -> f.() end)

    results =
      for r <- 1..rounds, reduce: %{} do
        acc ->
          variants
          |> rotate(r)
          |> Enum.reduce(acc, fn {name, f}, acc ->
            :erlang.garbage_collect()
            {us, extra} = f.()

            Map.update(acc, name, {[us], [extra]}, fn {l, extras} ->
              {[us | l], [extra | extras]}
            end)
          end)
      end

    Map.new(results, fn {name, {times, [extra | _] = extras}} ->
      sorted = Enum.sort(times)

      cpu =
        case for(e <- extras, e[:cpu_us] != nil, do: e[:cpu_us]) do
          [] -> nil
          cpus -> median(Enum.sort(cpus))
        end

      {name,
       %{median: median(sorted), min: hd(sorted), max: List.last(sorted), extra: extra, cpu: cpu}}
    end)
  end

  defp rotate(list, r) do
    k = rem(r, length(list))
    Enum.drop(list, k) ++ Enum.take(list, k)
  end

  defp median(sorted) do
    n = length(sorted)
    mid = div(n, 2)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, mid),
      else: (Enum.at(sorted, mid - 1) + Enum.at(sorted, mid)) / 2
  end

  @doc "Prints rows (lists of cells) as a Markdown table."
  def table(headers, rows) do
    widths =
      Enum.map(0..(length(headers) - 1), fn i ->
        [Enum.at(headers, i) | Enum.map(rows, &Enum.at(&1, i))]
        |> Enum.map(&String.length/1)
        |> Enum.max()
      end)

    line = fn cells ->
      "| " <>
        (cells
         |> Enum.zip(widths)
         |> Enum.map_join(" | ", fn {c, w} -> String.pad_trailing(c, w) end)) <> " |"
    end

    IO.puts(line.(headers))
    IO.puts("|" <> Enum.map_join(widths, "|", &String.duplicate("-", &1 + 2)) <> "|")
    Enum.each(rows, &IO.puts(line.(&1)))
  end

  @doc """
  CPU time the whole VM has used so far, in microseconds: every thread's time on a CPU, user
  and system (schedulers, dirty schedulers and native threads such as an ingest thread), from
  Linux's `/proc/self/task/*/schedstat` (`:erlang.statistics(:runtime)` elsewhere, user time
  only). Run with `+sbwt none` (as `scripts/bench` does) so that schedulers spinning while idle
  do not count.
  """
  def cpu_us do
    case File.ls("/proc/self/task") do
      {:ok, tasks} ->
        Enum.sum(for t <- tasks, do: task_ns(t)) |> div(1000)

      _ ->
        {ms, _} = :erlang.statistics(:runtime)
        ms * 1000
    end
  end

  # A thread's time on a CPU, in nanoseconds (0 once it is gone).
  defp task_ns(t) do
    case File.read("/proc/self/task/#{t}/schedstat") do
      {:ok, text} -> text |> String.split() |> hd() |> String.to_integer()
      _ -> 0
    end
  end

  @doc "The resident memory of this OS process, in bytes (Linux; 0 elsewhere)."
  def rss do
    case File.read("/proc/self/statm") do
      {:ok, text} ->
        [_, resident | _] = String.split(text)
        String.to_integer(resident) * 4096

      _ ->
        0
    end
  end

  @doc "Returns once `done?.()` is true, checking every millisecond."
  def wait_until(done?) do
    unless done?.() do
      Process.sleep(1)
      wait_until(done?)
    end
  end

  @doc "A float with `d` decimals."
  def f(x, d \\ 2), do: :erlang.float_to_binary(x / 1, decimals: d)
end
