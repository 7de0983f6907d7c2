defmodule Bench.Overload do
  @moduledoc """
  P3, overload side by side: W1's call loop makes ten times more events than ElixirScope's store
  holds, and `:dbg` takes the same load. Per variant: µs per call against the no-op tracer
  floor's; how much the VM's resident memory grew at most while the variant ran (sampled every
  5 ms), beside ElixirScope's store memory (what it is allowed to commit once full) and events
  stored and dropped (checked: every event not stored is counted as dropped); `:dbg`'s tracer
  mailbox at its longest.
  """

  alias Bench.Harness
  alias ElixirScope.{Store, Tracer}

  @flags [:send, :receive, :procs, :call]
  @ms [{:_, [], [{:return_trace}, {:exception_trace}]}]

  @doc "Runs the variants and prints one table."
  def run(rounds) do
    n = Bench.Capture.n()
    events = Bench.Capture.expected()
    capacity = div(events, 10)

    Harness.header(
      "P3, overload: W1's loop, N=#{n} (#{events} events) into a store of #{capacity} events, #{rounds} rounds (median)"
    )

    variants = [
      {"untraced", fn -> measure(fn _ -> nil end, fn _ -> true end, fn _ -> %{} end) end},
      {"no-op NIF tracer (floor)", &null_tracer/0},
      {"ElixirScope, store of 1/10 the events", fn -> elixir_scope(capacity) end},
      {":dbg (process tracer)", &with_dbg/0}
    ]

    results = Harness.run(variants, rounds)
    per_call = fn name -> results[name].median / n end
    floor = per_call.("no-op NIF tracer (floor)")

    rows =
      for {name, _} <- variants do
        e = results[name].extra

        [
          name,
          Harness.f(per_call.(name)),
          Harness.f(per_call.(name) / floor) <> "x",
          mib(e[:rss]),
          mib(e[:store_bytes]),
          if(e[:stored], do: "#{e.stored}/#{e.dropped}", else: "-"),
          case e[:counted] do
            nil -> "-"
            true -> "yes"
            false -> "NO"
          end,
          if(e[:mailbox], do: Integer.to_string(e.mailbox), else: "-")
        ]
      end

    Harness.table(
      [
        "variant",
        "µs/call",
        "vs floor",
        "RSS growth (max)",
        "store memory",
        "stored/dropped",
        "drops counted",
        "tracer mailbox (max)"
      ],
      rows
    )

    IO.puts("")
  end

  defp mib(nil), do: "-"
  defp mib(b), do: "#{Harness.f(b / 1_048_576, 1)} MiB"

  # Runs W1's loop traced by `setup`, sampling RSS (and `mailbox_of.(state)`, a pid whose queue
  # is sampled too) until `drained?`.
  defp measure(setup, drained?, info, mailbox_of \\ fn _ -> nil end) do
    :erlang.garbage_collect()
    rss0 = Harness.rss()
    parent = self()
    {:ok, server} = GenServer.start(Bench.Server, 0)
    state = setup.(server)
    :erlang.trace_pattern({Bench.Server, :handle_call, 3}, @ms, [:local])
    sampler = spawn_link(fn -> sample(parent, mailbox_of.(state), rss0, rss0, 0) end)

    {us, _} =
      :timer.tc(fn ->
        Bench.Capture.loop(server, Bench.Capture.n())
        Harness.wait_until(fn -> drained?.(state) end)
      end)

    send(sampler, {:done, self()})

    {rss, mailbox} =
      receive do
        {:sampled, rss, mailbox} -> {rss, mailbox}
      end

    :erlang.trace_pattern({Bench.Server, :_, :_}, false, [:local])
    :erlang.trace(server, false, [:all])
    result = info.(state)
    GenServer.stop(server)
    {us, Map.merge(result, %{rss: rss, mailbox: mailbox})}
  end

  defp sample(parent, tracer, rss0, max_rss, max_mailbox) do
    rss = Harness.rss()

    mailbox =
      case tracer && Process.info(tracer, :message_queue_len) do
        {:message_queue_len, len} -> len
        _ -> 0
      end

    {max_rss, max_mailbox} = {max(max_rss, rss), max(max_mailbox, mailbox)}

    receive do
      {:done, ^parent} ->
        send(parent, {:sampled, max_rss - rss0, if(tracer, do: max_mailbox)})
    after
      5 -> sample(parent, tracer, rss0, max_rss, max_mailbox)
    end
  end

  defp null_tracer do
    measure(
      fn s ->
        :erlang.trace(
          s,
          true,
          @flags ++ [{:tracer, ElixirScope.Native, :elixir_scope_null_tracer}]
        )
      end,
      fn _ -> true end,
      fn _ -> %{} end
    )
  end

  # Cold memory: the memory earlier stores left for reuse is given back first, so the store's
  # commitment shows in RSS.
  defp elixir_scope(capacity) do
    Store.release_memory()

    measure(
      fn s ->
        store = Store.new!(max_events: capacity)
        :ok = Tracer.trace_pid(s, store, @flags)
        store
      end,
      fn _ -> true end,
      fn store ->
        st = Store.stats(store)

        %{
          stored: st.events,
          dropped: st.dropped,
          store_bytes: st.bytes,
          counted: st.events + st.dropped == Bench.Capture.expected()
        }
      end
    )
  end

  defp with_dbg do
    measure(
      fn s ->
        counter = :counters.new(1, [])

        {:ok, tracer} =
          :dbg.tracer(:process, {fn _msg, c -> :counters.add(c, 1, 1) && c end, counter})

        {:ok, _} = :dbg.p(s, [:s, :r, :c, :procs])
        {counter, tracer}
      end,
      fn {c, _} -> :counters.get(c, 1) >= Bench.Capture.expected() end,
      fn _ ->
        :dbg.stop()
        %{}
      end,
      fn {_, tracer} -> tracer end
    )
  end
end
