defmodule ElixirScope.MCPTest do
  # The MCP server: JSON-RPC handling, every tool against a real traced app (answers compared
  # with the query API's), its HTTP endpoint's rules, and the official TypeScript SDK client
  # over Streamable HTTP and over stdio.
  use ExUnit.Case, async: false
  @moduletag :capture_log

  alias ElixirScope.{MCP, Query}
  alias ElixirScope.UI.JSON

  doctest ElixirScope.MCP
  doctest ElixirScope.AIIntegration

  defmodule Account do
    use GenServer
    def init(balance), do: {:ok, %{balance: balance, log: []}}

    def handle_call({:withdraw, n}, _from, %{balance: b}) when n > b,
      do: raise(ArgumentError, "overdraft")

    def handle_call({:withdraw, n}, _from, s),
      do: {:reply, :ok, %{s | balance: s.balance - n, log: [{:withdraw, n} | s.log]}}

    def handle_cast({:deposit, n}, s), do: {:noreply, %{s | balance: s.balance + n}}
  end

  setup do
    ElixirScope.stop()
    ElixirScope.UI.stop()
    {:ok, _} = ElixirScope.start()
    {:ok, account} = GenServer.start(Account, 100, name: :mcp_account)
    :ok = ElixirScope.trace(account)
    :ok = ElixirScope.trace(Account, as: :module)
    :ok = GenServer.call(account, {:withdraw, 30})
    GenServer.cast(account, {:deposit, 5})
    :ok = GenServer.call(account, {:withdraw, 10})
    ref = Process.monitor(account)
    catch_exit(GenServer.call(account, {:withdraw, 1_000}))
    assert_receive {:DOWN, ^ref, _, _, _}

    on_exit(fn ->
      ElixirScope.UI.stop()
      ElixirScope.stop()
    end)

    %{account: account, ctx: %{store: :default}}
  end

  defp rpc(method, params, ctx, id \\ 1),
    do: MCP.handle(%{"jsonrpc" => "2.0", "id" => id, "method" => method, "params" => params}, ctx)

  # What the SDK client prints after calling, over stdio, the tools the file `input` lists of
  # `mix elixir_scope.mcp` with `args`; it must exit 0.
  defp stdio_client(args, input) do
    mix = System.find_executable("mix")
    cmd = "node test/mcp/client.mjs stdio #{mix} elixir_scope.mcp #{args} < #{input}"
    {out, 0} = System.cmd("sh", ["-c", cmd], env: [{"MIX_ENV", "test"}])
    out
  end

  defp tool(name, args, ctx) do
    %{result: %{content: [%{type: "text", text: text}], isError: error?}} =
      rpc("tools/call", %{"name" => name, "arguments" => args}, ctx)

    {error?, text}
  end

  test "initialize, ping, tools/list; errors as JSON-RPC errors", %{ctx: ctx} do
    for v <- ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"] do
      assert %{result: %{protocolVersion: ^v, capabilities: %{tools: _}}} =
               rpc("initialize", %{"protocolVersion" => v, "capabilities" => %{}}, ctx)
    end

    assert %{result: %{protocolVersion: "2025-11-25"}} =
             rpc("initialize", %{"protocolVersion" => "1999-01-01"}, ctx)

    %{result: %{tools: tools}} = rpc("tools/list", %{}, ctx)
    names = Enum.map(tools, & &1.name)
    refute "trace_process" in names
    assert Enum.all?(tools, &(&1.inputSchema.type == "object" and is_binary(&1.description)))

    %{result: %{tools: all}} =
      rpc("tools/list", %{}, %{ctx | store: :default} |> Map.put(:allow_tracing, true))

    assert "trace_process" in Enum.map(all, & &1.name)

    assert %{error: %{code: -32601}} = rpc("resources/list", %{}, ctx)

    assert %{error: %{code: -32602, message: "unknown tool: nope"}} =
             rpc("tools/call", %{"name" => "nope"}, ctx)

    # Arguments that do not fit a tool's schema: the tool's error (isError), as 2025-11-25 asks.
    assert {true, "invalid arguments for why_crashed: missing pid"} =
             tool("why_crashed", %{}, ctx)

    assert {true, "invalid arguments for processes: limit is an integer from 1 to 200"} =
             tool("processes", %{"limit" => 0}, ctx)

    assert {true, "invalid arguments for status: unknown x"} = tool("status", %{"x" => 1}, ctx)

    assert %{error: %{code: -32602}} =
             rpc("tools/call", %{"name" => "status", "arguments" => [1]}, ctx)

    assert %{error: %{code: -32600}} = MCP.handle(%{"id" => 1}, ctx)
    assert %{error: %{code: -32600}} = MCP.handle("hello", ctx)

    assert %{error: %{code: -32600}} =
             MCP.handle(%{"jsonrpc" => "2.0", "id" => [1], "method" => "ping"}, ctx)

    assert nil == MCP.handle(%{"jsonrpc" => "2.0", "method" => "notifications/initialized"}, ctx)

    # A batch holds messages, not batches.
    assert [%{id: nil, error: %{code: -32600}}] =
             MCP.handle([[%{"jsonrpc" => "2.0", "id" => 3, "method" => "ping"}]], ctx)

    assert [%{id: 1, result: %{}}, %{id: 2, result: %{}}] =
             MCP.handle(
               [
                 %{"jsonrpc" => "2.0", "id" => 1, "method" => "ping"},
                 %{"jsonrpc" => "2.0", "method" => "notifications/x"},
                 %{"jsonrpc" => "2.0", "id" => 2, "method" => "ping"}
               ],
               ctx
             )
  end

  test "every tool answers as the query API does", %{account: account, ctx: ctx} do
    pid = inspect(account)

    {false, text} = tool("why_crashed", %{"pid" => pid}, ctx)
    {:ok, crash} = Query.why_crashed(account)
    assert text == ElixirScope.Crash.format(crash)
    assert text =~ "overdraft"

    # By name too (the process that held it), and no atom is made from an unknown one.
    {false, ^text} = tool("why_crashed", %{"pid" => ":mcp_account"}, ctx)
    atoms = :erlang.system_info(:atom_count)

    {true, missing} =
      tool("why_crashed", %{"pid" => "mcp_no_such_#{System.unique_integer([:positive])}"}, ctx)

    assert missing =~ "no process named" and :erlang.system_info(:atom_count) == atoms

    {false, state} = tool("state_at", %{"pid" => pid}, ctx)
    {:ok, last} = Query.state_at(account, :now)
    assert state == ElixirScope.UI.View.term(last)

    [_, second | _] = Query.events(pid: account, kind: :state)
    {false, then} = tool("state_at", %{"pid" => pid, "seq" => second.seq}, ctx)
    assert then == ElixirScope.UI.View.term(second.data)

    {false, timeline} = tool("state_timeline", %{"pid" => pid}, ctx)

    assert length(String.split(timeline, "\n#")) ==
             length(Query.events(pid: account, kind: :state))

    assert timeline =~ "changed: [:balance] 100 -> 70"

    {false, analysis} = tool("analyze_state_changes", %{"pid" => pid}, ctx)
    assert analysis =~ "[:balance]: changed 3 times"

    {false, crashes} = tool("crashes", %{}, ctx)
    assert crashes =~ inspect(account) and crashes =~ "overdraft"

    # Behind 1,500 normal exits, the crash is still found.
    for _ <- 1..1_500 do
      {:ok, p} = Agent.start(fn -> 0 end)
      :ok = ElixirScope.trace(p)
      Agent.stop(p)
    end

    {false, ^crashes} = tool("crashes", %{}, ctx)

    {false, found} =
      tool("find_events", %{"pattern" => "{:\"$gen_call\", _, {:withdraw, n}} when n > 20"}, ctx)

    expected =
      Query.find(message: "{:\"$gen_call\", _, {:withdraw, n}} when n > 20")
      |> Enum.map(&ElixirScope.Event.describe(&1.event, limit: 10))

    assert found == Enum.join(expected, "\n")

    {false, count} = tool("count_events", %{"kind" => "receive", "pid" => pid}, ctx)
    assert count == "#{Query.count(kind: :receive, pid: account)} events"
    {false, by_kind} = tool("count_events", %{"pid" => pid, "group_by" => "kind"}, ctx)

    for {k, n} <- Query.top([pid: account], :kind, 20),
        do: assert(by_kind =~ "#{inspect(k)}: #{n}")

    {false, calls} =
      tool("function_calls", %{"module" => "ElixirScope.MCPTest.Account", "limit" => 50}, ctx)

    assert length(String.split(calls, "\n")) ==
             length(Query.events(mfa: Account, kind: [:call, :return, :exception]))

    {false, path} = tool("execution_path", %{"pid" => pid, "limit" => 2}, ctx)
    assert path =~ "… more: call again with after_seq:"

    {false, processes} = tool("processes", %{}, ctx)
    assert processes =~ "#{pid} (:mcp_account): #{Query.Aggregate.per_process()[account]} events"

    {false, step} = tool("replay_step", %{"seq" => second.seq}, ctx)
    {:ok, cursor} = ElixirScope.Replay.open({:seq, second.seq})
    assert step == ElixirScope.Replay.format(cursor)

    {false, status} = tool("status", %{}, ctx)
    assert status =~ "events: #{ElixirScope.status().events}"

    {false, pending} = tool("pending_messages_at", %{"pid" => pid, "seq" => second.seq}, ctx)
    assert pending =~ "pending"

    {false, _tree} = tool("supervision_tree", %{}, ctx)
    {false, flow} = tool("message_flow", %{"from" => pid, "to" => inspect(self())}, ctx)
    assert flow =~ "send"

    {false, summary} = tool("summarize", %{"target" => pid}, ctx)
    assert summary == Query.summarize(account)
    {false, all} = tool("summarize", %{"target" => "all"}, ctx)
    assert all == Query.summarize(:all)

    {false, source} = tool("generate_test", %{"pid" => pid}, ctx)
    assert {:ok, source} == ElixirScope.TestGen.generate(account)
    assert source =~ "assert_raise ArgumentError"

    # The seed's Tidewave functions: the same tools.
    assert {:ok, ^timeline} =
             ElixirScope.AIIntegration.tidewave_get_state_timeline(%{"pid" => pid})

    assert {:error, "invalid arguments for state_timeline: missing pid"} =
             ElixirScope.AIIntegration.tidewave_get_state_timeline(%{})

    assert length(ElixirScope.AIIntegration.setup()) == 9

    # Tracing: refused unless allowed.
    {:ok, other} = Agent.start(fn -> 0 end)
    {true, refused} = tool("trace_process", %{"pid" => inspect(other)}, ctx)
    assert refused =~ "allow_tracing"

    {false, "traced"} =
      tool("trace_process", %{"pid" => inspect(other)}, Map.put(ctx, :allow_tracing, true))

    assert other in ElixirScope.status().traced.pids
  end

  test "status of a saved trace speaks of the trace, not of this VM's capture" do
    dir = Path.join(System.tmp_dir!(), "mcp_status_#{System.os_time()}")
    {:ok, _} = ElixirScope.save(dir)
    {:ok, trace} = ElixirScope.open(dir)
    {false, text} = tool("status", %{}, %{store: trace})
    File.rm_rf!(dir)
    assert text =~ "events: #{ElixirScope.Store.stats(trace).events}"
    assert text =~ "a saved trace, read from disk"
    refute text =~ "capture running"
  end

  test "long answers are cut with a line saying so", %{ctx: ctx} do
    # 150 states of ~400 characters each: a state timeline of 200 is far over 16,000.
    {:ok, big} = Agent.start(fn -> Map.new(1..20, &{&1, String.duplicate("x", 15)}) end)
    :ok = ElixirScope.trace(big)
    for i <- 1..150, do: Agent.update(big, &Map.put(&1, rem(i, 20) + 1, "value #{i}"))
    {false, text} = tool("state_timeline", %{"pid" => inspect(big), "limit" => 200}, ctx)
    assert String.length(text) > 16_000 and String.length(text) < 16_200
    assert text =~ ~r/… \(cut at 16000 characters: ask for a smaller page\)$/
  end

  defp mcp_post(url, body, headers \\ []) do
    headers = [
      {~c"accept", ~c"application/json, text/event-stream"}
      | Enum.map(headers, fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end)
    ]

    {:ok, {{_, status, _}, _, resp}} =
      :httpc.request(:post, {String.to_charlist(url), headers, ~c"application/json", body}, [],
        body_format: :binary
      )

    {status, resp}
  end

  test "POST /mcp on the UI's server, with its rules" do
    {:ok, ui} = ElixirScope.UI.start(port: 0)
    url = ui.url <> "mcp"

    {200, body} =
      mcp_post(
        url,
        ~s({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}})
      )

    assert {:ok, %{"result" => %{"protocolVersion" => "2025-06-18"}}} = JSON.decode(body)
    {202, ""} = mcp_post(url, ~s({"jsonrpc":"2.0","method":"notifications/initialized"}))
    {400, body} = mcp_post(url, "{nope")
    assert {:ok, %{"error" => %{"code" => -32700}}} = JSON.decode(body)

    {400, _} =
      mcp_post(url, ~s({"jsonrpc":"2.0","id":1,"method":"ping"}), [
        {"mcp-protocol-version", "1999-01-01"}
      ])

    {200, _} =
      mcp_post(url, ~s({"jsonrpc":"2.0","id":1,"method":"ping"}), [
        {"mcp-protocol-version", "2026-07-28"}
      ])

    {403, _} =
      mcp_post(url, ~s({"jsonrpc":"2.0","id":1,"method":"ping"}), [
        {"origin", "http://evil.example"}
      ])

    {:ok, {{_, 405, _}, _, _}} = :httpc.request(:get, {String.to_charlist(url), []}, [], [])

    # Reading needs no token on loopback; tracing does, even when allowed.
    ElixirScope.UI.stop()
    {:ok, ui} = ElixirScope.UI.start(port: 0, mcp: [allow_tracing: true])
    url = ui.url <> "mcp"
    {:ok, other} = Agent.start(fn -> 0 end)

    call =
      ~s({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"trace_process","arguments":{"pid":"#{inspect(other)}"}}})

    {200, body} = mcp_post(url, call)

    assert {:ok,
            %{
              "result" => %{
                "isError" => true,
                "content" => [%{"text" => "refused: tracing over HTTP needs the UI's token" <> _}]
              }
            }} = JSON.decode(body)

    {200, body} = mcp_post(url, call, [{"authorization", "Bearer " <> ui.token}])
    assert {:ok, %{"result" => %{"isError" => false}}} = JSON.decode(body)
    assert other in ElixirScope.status().traced.pids
  end

  test "bound beyond loopback, /mcp wants the token as a bearer" do
    {:ok, ui} = ElixirScope.UI.start(port: 0, ip: {0, 0, 0, 0})
    url = "http://127.0.0.1:#{ui.port}/mcp"
    ping = ~s({"jsonrpc":"2.0","id":1,"method":"ping"})
    {403, _} = mcp_post(url, ping)
    {403, _} = mcp_post(url, ping, [{"authorization", "Bearer wrong"}])
    {200, _} = mcp_post(url, ping, [{"authorization", "Bearer " <> ui.token}])
  end

  test "the MCP inspector's CLI lists the tools and calls one" do
    inspector = Path.expand("../mcp/node_modules/.bin/mcp-inspector", __DIR__)

    unless File.exists?(inspector),
      do: flunk("the MCP inspector is missing: run scripts/browser-setup")

    {:ok, ui} = ElixirScope.UI.start(port: 0)

    cli = fn args ->
      System.cmd(inspector, ["--cli", ui.url <> "mcp", "--transport", "http" | args],
        stderr_to_stdout: true
      )
    end

    {out, 0} = cli.(["--method", "tools/list"])
    {:ok, %{"tools" => tools}} = JSON.decode(out)
    assert Enum.map(tools, & &1["name"]) == Enum.map(ElixirScope.MCP.Tools.list(%{}), & &1.name)

    {out, 0} = cli.(["--method", "tools/call", "--tool-name", "status"])
    {:ok, %{"content" => [%{"text" => text}], "isError" => false}} = JSON.decode(out)
    assert text =~ "events: #{ElixirScope.status().events}"
  end

  @tag timeout: 120_000
  test "the SDK client calls every tool over HTTP and gets the answers the tools give here", %{
    account: account
  } do
    [%{seq: seq} | _] = Query.events(pid: account, kind: :state)
    {:ok, other} = Agent.start(fn -> 0 end, name: :mcp_other_agent)
    pid = inspect(account)

    args = %{
      "status" => %{},
      "processes" => %{},
      "why_crashed" => %{"pid" => pid},
      "crashes" => %{},
      "state_at" => %{"pid" => pid, "seq" => seq},
      "state_timeline" => %{"pid" => pid},
      "analyze_state_changes" => %{"pid" => pid},
      "pending_messages_at" => %{"pid" => pid, "seq" => seq},
      "message_flow" => %{"from" => pid, "to" => inspect(self())},
      "function_calls" => %{"module" => "ElixirScope.MCPTest.Account"},
      "execution_path" => %{"pid" => pid},
      "find_events" => %{"pattern" => "{:\"$gen_cast\", _}"},
      "count_events" => %{"group_by" => "kind"},
      "supervision_tree" => %{},
      "replay_step" => %{"seq" => seq, "step" => "next"},
      "summarize" => %{"target" => "all"},
      "generate_test" => %{"pid" => pid},
      "trace_named_process" => %{"name" => "mcp_other_agent"},
      "trace_module" => %{"module" => "ElixirScope.MCPTest.Account"},
      "trace_process" => %{"pid" => inspect(other)}
    }

    ctx = %{store: :default, allow_tracing: true}
    tools = ElixirScope.MCP.Tools.list(ctx) |> Enum.map(& &1.name)
    assert Enum.sort(tools) == Enum.sort(Map.keys(args))
    calls = Enum.map(tools, &%{name: &1, arguments: args[&1]})
    input = Path.join(System.tmp_dir!(), "mcp_all_#{System.unique_integer([:positive])}.json")
    File.write!(input, JSON.encode!(calls))

    {:ok, ui} =
      ElixirScope.UI.start(
        port: 0,
        mcp: [allow_tracing: true],
        token: "mcp-test-token-0123456789"
      )

    # (The tracing tools want the token over HTTP: the client sends it.)
    {out, 0} =
      System.cmd("sh", [
        "-c",
        "MCP_TOKEN=#{ui.token} node test/mcp/client.mjs http #{ui.url}mcp < #{input}"
      ])

    File.rm(input)
    {:ok, %{"results" => results}} = JSON.decode(out)

    for {name, result} <- Enum.zip(tools, results) do
      {:ok, %{content: [%{text: here}], isError: false}} =
        ElixirScope.MCP.Tools.call(name, args[name], ctx)

      assert %{"isError" => false, "content" => [%{"text" => text}]} = result, name
      # The tracing tools changed the capture meanwhile: only what does not depend on it.
      unless name in ~w(status processes summarize count_events), do: assert(text == here, name)
    end
  end

  @tag timeout: 120_000
  test "the official TypeScript SDK client, over Streamable HTTP and stdio", %{account: account} do
    # By name: the stdio server reads the trace in another VM, where this VM's pids are not
    # the same text.
    calls = [
      %{name: "why_crashed", arguments: %{pid: ":mcp_account"}},
      %{name: "state_at", arguments: %{pid: ":mcp_account"}},
      %{name: "nope", arguments: %{}},
      # Non-ASCII in an answer (its "…" line) must arrive as the same text.
      %{name: "execution_path", arguments: %{pid: ":mcp_account", limit: 1}}
    ]

    input = Path.join(System.tmp_dir!(), "mcp_calls_#{System.unique_integer([:positive])}.json")
    File.write!(input, JSON.encode!(calls))
    {:ok, crash} = Query.why_crashed(account)
    {:ok, state} = Query.state_at(account, :now)

    # Exactly the API's answers here; read in another VM (stdio over the saved trace), its
    # pids and the names it has no atoms for print differently, so the facts are compared.
    check = fn out, exact? ->
      {:ok, %{"server" => server, "tools" => tools, "results" => [why, st, nope, path]}} =
        JSON.decode(out)

      assert [%{"text" => path_text}] = path["content"]
      assert path_text =~ "\n… more: call again with after_seq: "

      assert server["name"] == "elixir_scope"
      assert "why_crashed" in Enum.map(tools, & &1["name"])
      assert [%{"text" => text}] = why["content"]
      assert [%{"text" => st_text}] = st["content"]

      if exact? do
        assert text == ElixirScope.Crash.format(crash)
        assert st_text == ElixirScope.UI.View.term(state)
      else
        assert text =~ ~r/^#PID<\d+\.\d+\.\d+> exited: \*\* \(ArgumentError\) overdraft/
        assert text =~ "ElixirScope.MCPTest.Account.handle_call/3"
        assert text =~ "state before: %{balance: 65"
        # (An atom that VM does not have, :withdraw, reads as its name.)
        assert st_text == ~s(%{balance: 65, log: [{"withdraw", 10}, {"withdraw", 30}]})
      end

      assert nope["error"]["code"] == -32602
    end

    {:ok, ui} = ElixirScope.UI.start(port: 0)
    {out, 0} = System.cmd("sh", ["-c", "node test/mcp/client.mjs http #{ui.url}mcp < #{input}"])
    check.(out, true)

    # stdio: `mix elixir_scope.mcp --trace DIR` over the same capture, saved.
    dir =
      Path.join(
        System.tmp_dir!(),
        "mcp_trace_#{System.os_time()}_#{System.unique_integer([:positive])}"
      )

    {:ok, _} = ElixirScope.save(dir)
    out = stdio_client("--trace #{dir}", input)

    check.(out, false)
    File.rm_rf!(dir)
    File.rm(input)
  end

  @tag timeout: 120_000
  test "stdio attached to a running node (--node): the node's capture answers" do
    paths = Enum.flat_map(:code.get_path(), fn p -> [~c"-pa", p] end)
    cookie = ~c"mcp_cookie_#{System.unique_integer([:positive])}"

    {:ok, peer, node} =
      :peer.start(%{
        name: :"mcp_peer_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        args: [~c"-setcookie", cookie | paths]
      })

    try do
      {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:elixir_scope])
      {:ok, _} = :peer.call(peer, ElixirScope, :start, [[]])

      code = ~S"""
      defmodule PeerAccount do
        use GenServer
        def init(b), do: {:ok, %{balance: b}}
        def handle_call({:withdraw, n}, _, %{balance: b}) when n > b, do: raise(ArgumentError, "overdraft")
        def handle_call({:withdraw, n}, _, s), do: {:reply, :ok, %{s | balance: s.balance - n}}
      end

      Logger.configure(level: :critical)
      {:ok, a} = GenServer.start(PeerAccount, 100, name: :peer_account)
      :ok = ElixirScope.trace(a)
      :ok = GenServer.call(a, {:withdraw, 10})
      try do
        GenServer.call(a, {:withdraw, 500})
      catch
        :exit, _ -> :ok
      end

      Process.sleep(50)
      {:ok, crash} = ElixirScope.Query.why_crashed(:peer_account)
      ElixirScope.Crash.format(crash)
      """

      {expected, _} = :peer.call(peer, Code, :eval_string, [code], 30_000)

      input =
        Path.join(System.tmp_dir!(), "mcp_peer_calls_#{System.unique_integer([:positive])}.json")

      File.write!(input, ~s([{"name": "why_crashed", "arguments": {"pid": ":peer_account"}}]))
      out = stdio_client("--node #{node} --cookie #{cookie}", input)

      File.rm(input)
      {:ok, %{"results" => [%{"content" => [%{"text" => text}]}]}} = JSON.decode(out)
      assert text == expected
      assert text =~ "overdraft"
    after
      :peer.stop(peer)
    end
  end
end
