defmodule ElixirScope.UIBrowserTest do
  # The web UI in a real headless Chromium, against a real traced GenServer: every view must show
  # what the Elixir API answers. The browser is driven by test/browser/ui.mjs (playwright-core);
  # this test starts the app and the UI and writes the API's answers for it to compare.
  # Screenshots land in _build/ui-screenshots.
  use ExUnit.Case, async: false

  alias ElixirScope.Query
  alias ElixirScope.Query.Aggregate
  alias ElixirScope.UI.{API, View}

  @moduletag timeout: 120_000

  defmodule Counter do
    use GenServer
    def init(:ok), do: {:ok, %{count: 0, total: 0, label: "counter"}}

    def handle_call({:add, n}, _from, s),
      do: {:reply, s.count + 1, %{s | count: s.count + 1, total: s.total + n}}

    def handle_cast(:reset, s), do: {:noreply, %{s | count: 0}}
    def handle_info({:ping, _}, s), do: {:noreply, s}
  end

  setup_all do
    chromium = System.get_env("CHROMIUM", "/usr/bin/chromium")
    playwright = Path.expand("../../assets/node_modules/playwright-core", __DIR__)

    unless File.exists?(chromium) and File.dir?(playwright) and System.find_executable("node") do
      flunk(
        "the browser tests need Chromium, node and playwright-core: run scripts/browser-setup"
      )
    end

    :ok
  end

  setup do
    ElixirScope.stop()
    ElixirScope.UI.stop()
    {:ok, _} = ElixirScope.start()
    {:ok, counter} = GenServer.start(Counter, :ok, name: :ui_counter)
    :ok = ElixirScope.trace(counter)

    on_exit(fn ->
      ElixirScope.UI.stop()
      ElixirScope.stop()
      Process.exit(counter, :kill)
    end)

    %{counter: counter}
  end

  test "every view shows what the query API answers", %{counter: counter} do
    for i <- 1..60, do: GenServer.call(counter, {:add, i})
    GenServer.cast(counter, :reset)
    for i <- 1..3, do: send(counter, {:ping, i})
    :sys.get_state(counter)

    {:ok, ui} = ElixirScope.UI.start(port: 0)
    store = ElixirScope.Store.default()
    pattern = "{:\"$gen_call\", _, {:add, n}} when n > 55"
    bad = "{:add, "

    {400, %{error: bad_error}} = API.handle(:get, "events", %{"pattern" => bad}, %{store: store})

    states = Query.events(pid: counter, kind: :state)
    [_, s2, s3 | _] = states
    page1 = Query.timeline(counter, limit: 50)
    page2 = Query.timeline(counter, limit: 50, after_seq: List.last(page1).seq)

    expected = %{
      status: %{
        events: ElixirScope.status().events,
        tracing_level: Atom.to_string(ElixirScope.status().tracing_level)
      },
      counter: inspect(counter),
      tail: Query.events(order: :desc, limit: 100) |> Enum.map(& &1.seq) |> Enum.reverse(),
      pattern: pattern,
      matches: Query.find(message: pattern) |> Enum.map(& &1.event.seq),
      bad_pattern: bad,
      bad_pattern_error: bad_error,
      processes:
        for(
          {pid, n} <- Aggregate.group_by([], :pid),
          is_pid(pid),
          into: %{},
          do: {inspect(pid), n}
        ),
      timeline: [Enum.map(page1, & &1.seq), Enum.map(page2, & &1.seq)],
      states: Enum.map(states, &%{seq: &1.seq, text: View.term(&1.data)}),
      third_changed:
        for(
          {path, _, _} <- ElixirScope.StateDiff.diff(s2.data, s3.data).changed,
          do: Enum.map_join(path, "", &"[#{inspect(&1)}]")
        ),
      numeric_fields: [":count", ":total"],
      tags:
        for(
          {tag, n} <- Aggregate.group_by([pid: counter, kind: :receive], :tag),
          into: %{},
          do: {inspect(tag), n}
        )
    }

    assert length(expected.matches) == 5
    dir = Path.join(Mix.Project.build_path(), "ui-screenshots")

    path =
      Path.join(
        System.tmp_dir!(),
        "elixir_scope_ui_expected_#{System.unique_integer([:positive])}.json"
      )

    File.write!(path, ElixirScope.UI.JSON.encode!(expected))

    {out, status} =
      System.cmd("node", ["test/browser/ui.mjs", ui.url, path, dir], stderr_to_stdout: true)

    File.rm(path)
    assert status == 0, out
    refute out =~ "FAIL"
  end
end
