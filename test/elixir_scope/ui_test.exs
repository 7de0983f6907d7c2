defmodule ElixirScope.UITest do
  # The UI's HTTP front door over real sockets (OTP's :httpc as the client): every JSON route's
  # shape and status codes, bad input, and the security rules (Host, Origin, token).
  use ExUnit.Case, async: false

  alias ElixirScope.Query
  alias ElixirScope.UI
  alias ElixirScope.UI.JSON

  doctest ElixirScope.UI.JSON
  doctest ElixirScope.UI.View
  doctest ElixirScope.UI.API

  defmodule Box do
    use GenServer
    def init(n), do: {:ok, %{n: n, items: []}}

    def handle_call({:put, x}, _from, s),
      do: {:reply, :ok, %{s | n: s.n + 1, items: [x | s.items]}}
  end

  setup do
    ElixirScope.stop()
    UI.stop()
    {:ok, _} = ElixirScope.start()
    {:ok, box} = GenServer.start(Box, 0)
    :ok = ElixirScope.trace(box)
    for i <- 1..5, do: GenServer.call(box, {:put, i})
    {:ok, ui} = UI.start(port: 0)

    on_exit(fn ->
      UI.stop()
      ElixirScope.stop()
    end)

    %{ui: ui, box: box}
  end

  defp request(method, url, opts \\ []) do
    headers =
      Enum.map(opts[:headers] || [], fn {k, v} ->
        {String.to_charlist(k), String.to_charlist(v)}
      end)

    req =
      case method do
        :get -> {String.to_charlist(url), headers}
        :post -> {String.to_charlist(url), headers, ~c"application/json", opts[:body] || ""}
      end

    http = fn ->
      :httpc.request(method, req, [timeout: 10_000, autoredirect: false], body_format: :binary)
    end

    # A keep-alive connection the server closed (as it does after refusing a huge body) can be
    # handed out by httpc's pool once more: that request is sent again, on a new connection.
    {:ok, {{_, status, _}, resp_headers, body}} =
      case http.() do
        # (A GET only: it is safe to send twice.)
        {:error, :socket_closed_remotely} when method == :get -> http.()
        other -> other
      end

    {status, Map.new(resp_headers, fn {k, v} -> {to_string(k), to_string(v)} end), body}
  end

  # POSTs `body` to the control route with the page's token: `{status, decoded answer}`.
  defp control(ui, body) do
    {status, _, resp} =
      request(:post, ui.url <> "api/control",
        headers: [{"x-elixir-scope-token", ui.token}],
        body: body
      )

    {status, elem(JSON.decode(resp), 1)}
  end

  defp get_json(ui, path, opts \\ []) do
    {status, _, body} = request(:get, ui.url <> path, opts)
    {:ok, json} = JSON.decode(body)
    {status, json}
  end

  test "status, events, processes, process, timeline and states answer as the query API", %{
    ui: ui,
    box: box
  } do
    {200, status} = get_json(ui, "api/status")
    assert status["mode"] == "live" and status["running"] == true
    assert status["events"] == ElixirScope.status().events
    assert status["traced"]["pids"] == [inspect(box)]

    {200, page} = get_json(ui, "api/events?limit=4&after_seq=2")

    assert Enum.map(page["events"], & &1["seq"]) ==
             Enum.map(Query.events(after_seq: 2, limit: 4), & &1.seq)

    assert [%{"kind" => _, "pid" => _, "summary" => _, "data" => _, "time" => _} | _] =
             page["events"]

    pid = URI.encode_www_form(inspect(box))
    {200, page} = get_json(ui, "api/events?kind=state,receive&pid=#{pid}")

    assert Enum.map(page["events"], & &1["seq"]) ==
             Enum.map(Query.events(kind: [:state, :receive], pid: box), & &1.seq)

    {200, page} =
      get_json(
        ui,
        "api/events?pattern_key=state&pattern=" <> URI.encode_www_form("%{n: n} when n >= 4")
      )

    assert Enum.map(page["events"], & &1["data"]) == [
             "%{items: [4, 3, 2, 1], n: 4}",
             "%{items: [5, 4, 3, 2, 1], n: 5}"
           ]

    {200, %{"processes" => [p]}} = get_json(ui, "api/processes")
    assert p["pid"] == inspect(box) and p["alive"] and p["mailbox"] == 0
    assert p["events"] == length(Query.events(pid: box))

    {200, p} = get_json(ui, "api/process?pid=#{pid}")
    assert p["by_kind"]["state"] == 6
    assert p["received_by_tag"] == [%{"tag" => ":\"$gen_call\"", "count" => 5}]

    {200, page} = get_json(ui, "api/timeline?pid=#{pid}&limit=3")

    assert Enum.map(page["events"], & &1["seq"]) ==
             Enum.map(Query.timeline(box, limit: 3), & &1.seq)

    {200, %{"states" => states}} = get_json(ui, "api/states?pid=#{pid}")
    assert length(states) == 6
    assert Enum.map(states, & &1["numbers"]) == for(n <- 0..5, do: %{":n" => n})
    [first, second | _] = states
    assert first["diff"] == nil
    assert second["diff"]["changed"] == [%{"path" => "[:n]", "before" => "0", "after" => "1"}]
    assert second["diff"]["added"] == [%{"path" => "[:items][0]", "value" => "1"}]

    # A second page of states diffs its first state against the state before it.
    {200, %{"states" => [third | _]}} =
      get_json(ui, "api/states?pid=#{pid}&after_seq=#{second["seq"]}")

    assert %{"path" => "[:n]", "before" => "1", "after" => "2"} in third["diff"]["changed"]
  end

  test "flow, tree, replay, crashes and variables answer as the query API", %{ui: ui, box: box} do
    pid = URI.encode_www_form(inspect(box))

    {200, flow} = get_json(ui, "api/flow")
    assert flow["lifelines"] == [%{"pid" => inspect(box), "name" => nil}]
    assert flow["messages"] == []

    {200, flow} = get_json(ui, "api/flow?pids=#{pid},#{URI.encode_www_form(inspect(self()))}")
    assert length(flow["lifelines"]) == 2
    # The test process is not traced: its calls are drawn from their receipt, the replies
    # from their send; an arrow says the request or the reply.
    label = fn
      %{kind: :call, event: %{data: {_, _, request}}} -> inspect(request)
      %{kind: :reply, event: %{data: {_, value}}} -> inspect(value)
    end

    expected = Query.sequence([box, self()])
    assert length(expected) == 10

    assert Enum.map(flow["messages"], &{&1["seq"], &1["kind"], &1["label"]}) ==
             Enum.map(expected, &{&1.seq, Atom.to_string(&1.kind), label.(&1)})

    {200, tree} = get_json(ui, "api/tree")

    assert tree["roots"] == [] and tree["changes"] == [] and
             tree["at"] == ElixirScope.status().published_seq

    [first | _] = Query.events()
    {200, r} = get_json(ui, "api/replay?step=start")
    assert r["event"]["seq"] == first.seq and r["moved"]
    {200, r2} = get_json(ui, "api/replay?seq=#{first.seq}&step=next")
    {:ok, cursor} = ElixirScope.Replay.open({:seq, first.seq})
    {:ok, next} = ElixirScope.Replay.next(cursor)
    assert r2["event"]["seq"] == next.event.seq
    {200, r3} = get_json(ui, "api/replay?seq=#{next.event.seq}&step=prev")
    assert r3["event"]["seq"] == first.seq
    {200, last} = get_json(ui, "api/replay?step=end")
    {200, same} = get_json(ui, "api/replay?seq=#{last["event"]["seq"]}&step=next")
    assert same["event"]["seq"] == last["event"]["seq"] and same["moved"] == false

    [%{event: put3}] = Query.find(kind: :receive, message: ~s({:"$gen_call", _, {:put, 3}}))

    {200, r4} =
      get_json(
        ui,
        "api/replay?step=until&pattern=" <> URI.encode_www_form(~s({:"$gen_call", _, {:put, 3}}))
      )

    assert r4["event"]["seq"] == put3.seq
    [%{"pid" => p, "state" => state, "pending" => pending}] = r4["processes"]
    assert p == inspect(box)
    {:ok, st} = Query.state_at(box, {:seq, put3.seq})
    assert state == ElixirScope.UI.View.term(st)
    assert [%{"data" => _}] = pending

    # A time: the last event at or before it.
    iso =
      ElixirScope.Store.default()
      |> ElixirScope.Store.to_datetime(put3.ts)
      |> DateTime.to_iso8601()

    {200, r5} = get_json(ui, "api/replay?time=" <> URI.encode_www_form(iso))
    {:ok, dt, _} = DateTime.from_iso8601(iso)
    {:ok, at_time} = ElixirScope.Replay.open(dt)
    assert r5["event"]["seq"] == at_time.event.seq

    {200, %{"processes" => [_], "total" => 1}} = get_json(ui, "api/processes?limit=1")
    {200, %{"crashes" => []}} = get_json(ui, "api/crashes")
    {200, %{"calls" => []}} = get_json(ui, "api/calls")

    for {path, message} <- [
          {"api/flow?pids=nope", "invalid pids"},
          {"api/flow?limit=5000", "invalid limit"},
          {"api/tree?at=0", "invalid at"},
          {"api/tree?from=x", "invalid from"},
          {"api/replay?step=sideways", "invalid step"},
          {"api/replay?step=until", "needs a pattern"},
          {"api/replay?time=yesterday", "invalid time \"yesterday\""},
          {"api/processes?limit=0", "invalid limit"},
          {"api/replay?kind=spawn", "no events to replay"},
          {"api/call", "invalid seq nil"},
          {"api/call?seq=1", "no tracked call at seq 1"},
          {"api/crashes?limit=0", "invalid limit"}
        ] do
      {status, %{"error" => error}} = get_json(ui, path)
      assert status == 400, path
      assert error =~ message, "#{path}: #{error}"
    end
  end

  test "a state holding an integer JSON numbers cannot carry is shown, and left out of the chart",
       %{ui: ui} do
    {:ok, big} = GenServer.start(Box, 2 ** 70)
    :ok = ElixirScope.trace(big)
    GenServer.call(big, {:put, 1})

    {200, %{"states" => states}} =
      get_json(ui, "api/states?pid=" <> URI.encode_www_form(inspect(big)))

    assert [%{"numbers" => %{}, "state" => first}, %{"numbers" => %{}} | _] = states
    assert first =~ Integer.to_string(2 ** 70)
  end

  test "a tail that matches nothing moves on: scanned_to", %{ui: ui} do
    published = ElixirScope.status().published_seq
    {200, page} = get_json(ui, "api/events?pattern=" <> URI.encode_www_form("{:never, _}"))
    assert page["events"] == [] and page["scanned_to"] >= published and published > 0

    # A full page: only as far as its last event.
    {200, page} = get_json(ui, "api/events?limit=2")
    assert page["scanned_to"] == 2
  end

  test "bad input is a 4xx with a message, never a crash", %{ui: ui} do
    for {path, message} <- [
          {"api/events?limit=0", "invalid limit \"0\": expected an integer from 1 to 1000"},
          {"api/events?limit=abc", "invalid limit \"abc\""},
          {"api/events?after_seq=-1", "invalid after_seq \"-1\""},
          {"api/events?kind=bogus", "invalid kind \"bogus\""},
          {"api/events?order=up", "invalid order \"up\""},
          {"api/events?pid=self", "invalid pid \"self\""},
          {"api/events?pid=" <> URI.encode_www_form("#PID<1.2.3>"), "invalid pid"},
          {"api/events?pattern_key=nope&pattern=x", "invalid pattern_key \"nope\""},
          {"api/events?pattern=" <> URI.encode_www_form("{:a, ^x}"), "invalid query pattern"},
          {"api/timeline", "invalid pid nil"},
          {"api/states?pid=" <> URI.encode_www_form("#PID<0.1>"), "invalid pid"}
        ] do
      {status, %{"error" => error}} = get_json(ui, path)
      assert status == 400, path
      assert error =~ message, "#{path}: #{error}"
    end

    # Patterns never make atoms (a first query loads the code it runs: its atoms come first).
    {200, _} =
      get_json(
        ui,
        "api/events?pattern=" <>
          URI.encode_www_form("{:ui_warm_up_#{System.unique_integer([:positive])}, _}")
      )

    atoms = :erlang.system_info(:atom_count)

    {200, _} =
      get_json(
        ui,
        "api/events?pattern=" <>
          URI.encode_www_form("{:ui_test_never_an_atom_#{System.unique_integer([:positive])}, _}")
      )

    assert :erlang.system_info(:atom_count) == atoms

    assert {404, %{"error" => "no such route: /api/nope"}} = get_json(ui, "api/nope")
    assert {404, _} = get_json(ui, "nope")
    assert {404, _} = get_json(ui, "static/..%2fmix.exs")
    assert {404, _} = get_json(ui, "static/missing.js")

    post = &control(ui, &1)

    assert {400, %{"error" => "invalid JSON body: " <> _}} = post.("{nope")
    assert {400, %{"error" => "expected a JSON object" <> _}} = post.("[1]")

    assert {400,
            %{
              "error" =>
                "invalid action \"fly\": expected one of \"level\", \"sampling\", \"start\", \"stop\", \"trace\", \"untrace\""
            }} = post.(~s({"action": "fly"}))

    assert {400, %{"error" => "invalid level \"max\"" <> _}} =
             post.(~s({"action": "level", "level": "max"}))

    assert {400, %{"error" => "invalid rate 2" <> _}} =
             post.(~s({"action": "sampling", "rate": 2}))

    deep = String.duplicate("[", 10_000) <> String.duplicate("]", 10_000)
    assert {400, %{"error" => "invalid JSON body: recursion limit" <> _}} = post.(deep)
    # Past max_body_size httpd answers 413 or closes the connection; the server lives on.
    huge = ~s({"action": ") <> String.duplicate("x", 100_000) <> ~s("})

    req =
      {String.to_charlist(ui.url <> "api/control"),
       [{~c"x-elixir-scope-token", String.to_charlist(ui.token)}], ~c"application/json", huge}

    case :httpc.request(:post, req, [timeout: 10_000], body_format: :binary) do
      {:ok, {{_, status, _}, _, _}} -> assert status == 413
      {:error, reason} -> assert reason in [{:shutdown, :server_closed}, :socket_closed_remotely]
    end

    assert {200, _} = get_json(ui, "api/status")
    assert {405, _} = get_json(ui, "api/control")
  end

  test "control actions change the capture, with the token only", %{ui: ui} do
    body = ~s({"action": "level", "level": "messages_only"})
    {403, _, _} = request(:post, ui.url <> "api/control", body: body)

    {403, _, _} =
      request(:post, ui.url <> "api/control",
        headers: [{"x-elixir-scope-token", "wrong"}],
        body: body
      )

    assert ElixirScope.status().tracing_level == :full

    {200, _, _} =
      request(:post, ui.url <> "api/control",
        headers: [{"x-elixir-scope-token", ui.token}],
        body: body
      )

    assert ElixirScope.status().tracing_level == :messages_only

    {200, _, _} =
      request(:post, ui.url <> "api/control",
        headers: [{"x-elixir-scope-token", ui.token}],
        body: ~s({"action": "sampling", "rate": 0.5})
      )

    assert ElixirScope.status().sample_rate == 0.5

    {200, _, _} =
      request(:post, ui.url <> "api/control",
        headers: [{"x-elixir-scope-token", ui.token}],
        body: ~s({"action": "stop"})
      )

    refute ElixirScope.status().running
    {200, %{"running" => false}} = get_json(ui, "api/status")

    control = &control(ui, &1)

    # Stopped: nothing to set; a new capture can start, once.
    assert {409, %{"error" => "no capture is running"}} =
             control.(~s({"action": "level", "level": "minimal"}))

    assert {409, %{"error" => "no capture is running"}} =
             control.(~s({"action": "sampling", "rate": 0.1}))

    assert {200, _} = control.(~s({"action": "start"}))
    assert ElixirScope.status().running and ElixirScope.status().events == 0
    assert {409, %{"error" => "a capture is already running"}} = control.(~s({"action": "start"}))

    # Trace and untrace by pid, registered name or module; no atom is made from a target.
    {:ok, named} = GenServer.start(Box, 0, name: :ui_control_named)
    target = fn action, t -> control.(JSON.encode!(%{action: action, target: t})) end
    assert {200, _} = target.("trace", "ui_control_named")
    assert named in ElixirScope.status().traced.pids
    assert {200, _} = target.("untrace", inspect(named))
    refute named in ElixirScope.status().traced.pids
    assert {200, _} = target.("trace", "ElixirScope.UITest.Box")
    assert ElixirScope.UITest.Box in ElixirScope.status().traced.modules
    # (A first refusal loads the code that answers it: its atoms come first.)
    {400, _} = target.("trace", "ui_warm_up_#{System.unique_integer([:positive])}")
    {400, _} = target.("trace", "Warm.Up#{System.unique_integer([:positive])}")
    atoms = :erlang.system_info(:atom_count)
    fresh = "ui_no_such_name_#{System.unique_integer([:positive])}"
    assert {400, %{"error" => "invalid target " <> _}} = target.("trace", fresh)
    assert {400, %{"error" => "invalid target " <> _}} = target.("trace", "Nope.#{fresh}")
    assert :erlang.system_info(:atom_count) == atoms

    assert {400, %{"error" => "invalid target 7" <> _}} =
             control.(~s({"action": "trace", "target": 7}))

    dead = spawn(fn -> :ok end)
    ref = Process.monitor(dead)
    assert_receive {:DOWN, ^ref, _, _, _}
    assert {400, %{"error" => error}} = target.("trace", inspect(dead))
    assert error =~ "not alive"
    GenServer.stop(named)
  end

  test "requests naming another Host or Origin are refused", %{ui: ui} do
    for headers <- [
          [{"host", "evil.example:#{ui.port}"}],
          [{"host", "127.0.0.1:1"}],
          [{"origin", "http://evil.example"}],
          [{"origin", "https://127.0.0.1:#{ui.port}"}],
          [{"origin", "null"}]
        ] do
      {status, _, body} = request(:get, ui.url <> "api/status", headers: headers)
      assert status == 403, inspect(headers)
      assert body =~ "refused" or body =~ "unknown Host"
    end

    {200, _, _} =
      request(:get, ui.url <> "api/status",
        headers: [{"origin", "http://localhost:#{ui.port}"}, {"host", "localhost:#{ui.port}"}]
      )
  end

  test "the page carries its token; responses forbid framing and sniffing", %{ui: ui} do
    {200, headers, html} = request(:get, ui.url)
    assert html =~ ~s(content="#{ui.token}")
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] =~ "default-src 'self'"
    {200, headers, js} = request(:get, ui.url <> "static/app.js")
    assert headers["content-type"] =~ "javascript" and byte_size(js) > 1000
  end

  test "bound beyond loopback, every request needs the token (URL, then cookie)" do
    UI.stop()
    {:ok, ip} = first_non_loopback()
    {:ok, ui} = UI.start(port: 0, ip: ip)
    base = "http://#{:inet.ntoa(ip)}:#{ui.port}/"
    assert ui.url == base <> "?token=#{ui.token}"

    {403, _, _} = request(:get, base)
    {403, _, _} = request(:get, base <> "api/status")
    {403, _, _} = request(:get, base <> "?token=wrong")
    # The token's URL sets a cookie of this UI's and sends the browser to /, token-free.
    {303, headers, _} = request(:get, ui.url)
    assert headers["location"] == "/"
    [cookie | _] = String.split(headers["set-cookie"], ";")
    assert cookie == "elixir_scope_token_#{ui.port}=#{ui.token}"
    {200, _, html} = request(:get, base, headers: [{"cookie", cookie}])
    assert html =~ ui.token
    {200, _, _} = request(:get, base <> "api/status", headers: [{"cookie", cookie}])
    # Another UI's cookie does not open this one.
    {403, _, _} =
      request(:get, base <> "api/status", headers: [{"cookie", "elixir_scope_token=#{ui.token}"}])

    {200, _, _} =
      request(:get, base <> "api/status", headers: [{"x-elixir-scope-token", ui.token}])

    # A loopback UI on the same port (another address), if the OS lets it listen, does not
    # lift this one's token.
    if ip != {0, 0, 0, 0} do
      case UI.start(port: ui.port, ip: {127, 0, 0, 1}) do
        {:ok, _} ->
          {200, _, _} = request(:get, "http://127.0.0.1:#{ui.port}/api/status")

          {403, _, _} =
            request(:get, base <> "api/status", headers: [{"host", "127.0.0.1:#{ui.port}"}])

          {403, _, _} = request(:get, base <> "api/status")

        {:error, reason} ->
          assert reason in [:eaddrinuse, {:cannot_listen, {127, 0, 0, 1}, ui.port}]
      end
    end
  end

  test "a saved trace: same answers, no controls" do
    dir =
      Path.join(System.tmp_dir!(), "elixir_scope_ui_trace_#{System.unique_integer([:positive])}")

    {:ok, _} = ElixirScope.save(dir)
    {:ok, trace} = ElixirScope.open(dir)
    {:ok, ui} = UI.start(port: 0, store: trace)

    {200, status} = get_json(ui, "api/status")
    assert status["mode"] == "trace" and status["events"] == ElixirScope.Store.stats(trace).events

    {200, page} = get_json(ui, "api/events?limit=1000")
    assert Enum.map(page["events"], & &1["seq"]) == Enum.map(Query.events(store: trace), & &1.seq)

    {status, _, body} =
      request(:post, ui.url <> "api/control",
        headers: [{"x-elixir-scope-token", ui.token}],
        body: ~s({"action": "stop"})
      )

    assert status == 409 and body =~ "saved trace"
    assert ElixirScope.status().running
    File.rm_rf!(dir)
  end

  test "ElixirScope.start(ui: ...) serves the capture and prints its URL; a taken port stops it" do
    ElixirScope.stop()
    UI.stop()

    out =
      ExUnit.CaptureIO.capture_io(fn ->
        assert {:ok, _} = ElixirScope.start(ui: [port: 0])
      end)

    [_, url] = Regex.run(~r/ElixirScope UI at (\S+)/, out)
    {200, _, body} = request(:get, url <> "api/status")
    assert {:ok, %{"mode" => "live", "running" => true}} = JSON.decode(body)
    ElixirScope.stop()
    [{port, _, _} | _] = :persistent_term.get({UI, :servers})

    assert {:error, {:ui, :eaddrinuse}} = ElixirScope.start(ui: [port: port])
    refute ElixirScope.status().running
    # A port another program holds.
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, taken} = :inet.port(socket)
    assert {:error, :eaddrinuse} = UI.start(port: taken)
    :gen_tcp.close(socket)

    # Bad UI options raise before anything starts.
    assert_raise ArgumentError, ~r/port/, fn -> ElixirScope.start(ui: [port: 70_000]) end
    assert_raise ArgumentError, ~r/token/, fn -> ElixirScope.start(ui: [token: "short"]) end

    assert_raise ArgumentError, ~r/token/, fn ->
      ElixirScope.start(ui: [token: ~s(0123456789abcdef"><script>)])
    end

    assert_raise ArgumentError, ~r/ip/, fn -> ElixirScope.start(ui: [ip: "not an ip"]) end
    refute ElixirScope.status().running
  end

  test "mix elixir_scope.ui DIR serves a saved trace" do
    dir =
      Path.join(System.tmp_dir!(), "elixir_scope_ui_task_#{System.unique_integer([:positive])}")

    {:ok, _} = ElixirScope.save(dir)
    before = :persistent_term.get({UI, :servers}, [])

    task =
      Task.async(fn ->
        ExUnit.CaptureIO.capture_io(fn -> Mix.Tasks.ElixirScope.Ui.run([dir, "--port", "0"]) end)
      end)

    port = wait_for_new_server(before, 100)
    {200, _, body} = request(:get, "http://127.0.0.1:#{port}/api/status")
    {:ok, status} = JSON.decode(body)
    assert status["mode"] == "trace"
    {:ok, trace} = ElixirScope.open(dir)
    assert status["events"] == ElixirScope.Store.stats(trace).events

    Task.shutdown(task, :brutal_kill)
    UI.stop(port)
    File.rm_rf!(dir)
    assert_raise Mix.Error, ~r/usage/, fn -> Mix.Tasks.ElixirScope.Ui.run([]) end
    assert_raise Mix.Error, ~r/cannot open/, fn -> Mix.Tasks.ElixirScope.Ui.run([dir]) end
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, data} -> read_all(socket, acc <> data)
      {:error, :closed} -> {:ok, acc}
    end
  end

  defp wait_for_new_server(before, tries) do
    case :persistent_term.get({UI, :servers}, []) -- before do
      [{port, _, _} | _] -> port
      [] when tries > 0 -> Process.sleep(50) && wait_for_new_server(before, tries - 1)
    end
  end

  test "the UI's own processes are not captured: serving pages adds no events", %{box: box} do
    # Supervisors' states recorded (a traced supervisor) and calls traced everywhere (a traced
    # module): what made every connection's supervisor callback an event.
    {:ok, sup} = Supervisor.start_link([], strategy: :one_for_one)
    :ok = ElixirScope.trace(sup)
    :ok = ElixirScope.trace(Box, as: :module)
    UI.stop()
    {:ok, ui} = UI.start(port: 0)
    GenServer.call(box, {:put, :sync})
    before = ElixirScope.status().published_seq

    # A raw socket client: :httpc would add its own supervisor's events.
    for path <- List.duplicate(["/api/status", "/", "/static/app.js"], 4) |> List.flatten() do
      {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, ui.port, [:binary, active: false])

      :ok =
        :gen_tcp.send(
          socket,
          "GET #{path} HTTP/1.1\r\nHost: 127.0.0.1:#{ui.port}\r\nConnection: close\r\n\r\n"
        )

      assert {:ok, "HTTP/1.1 200" <> _} = read_all(socket, "")
    end

    GenServer.call(box, {:put, :sync})
    grown = Query.events(after_seq: before) |> Enum.reject(&(&1.pid == box))
    assert grown == []
    Supervisor.stop(sup)
  end

  test "JSON: what it cannot write is an ArgumentError naming it" do
    assert_raise ArgumentError, ~r/cannot write a Tuple term as JSON/, fn ->
      JSON.encode!(%{a: {1, 2}})
    end

    assert_raise ArgumentError, ~r/not UTF-8/, fn -> JSON.encode!(<<255>>) end
    assert_raise ArgumentError, ~r/improper list/, fn -> JSON.encode!([1 | 2]) end
    assert_raise ArgumentError, ~r/outside 64 bits/, fn -> JSON.encode!(2 ** 70) end

    assert_raise ArgumentError, ~r/deeper than 128/, fn ->
      JSON.encode!(Enum.reduce(1..200, 1, &[&1, &2]))
    end

    assert JSON.decode(~s({"a": 1.5e300, "b": -9223372036854775808, "c": 18446744073709551615})) ==
             {:ok,
              %{
                "a" => 1.5e300,
                "b" => -9_223_372_036_854_775_808,
                "c" => 18_446_744_073_709_551_615
              }}

    # Keys stay binaries: no atom is made.
    {:ok, _} = JSON.decode(~s({"ui_json_warm_up": 1}))
    atoms = :erlang.system_info(:atom_count)

    {:ok, %{}} =
      JSON.decode(~s({"ui_json_never_an_atom_#{System.unique_integer([:positive])}": 1}))

    assert :erlang.system_info(:atom_count) == atoms
  end

  defp first_non_loopback do
    {:ok, addrs} = :inet.getifaddrs()

    addrs
    |> Enum.flat_map(fn {_, opts} ->
      for {:addr, {_, _, _, _} = a} <- opts, a != {127, 0, 0, 1}, do: a
    end)
    |> case do
      [a | _] -> {:ok, a}
      [] -> {:ok, {0, 0, 0, 0}}
    end
  end
end
