defmodule ElixirScope.UI do
  @moduledoc """
  ElixirScope in the browser: a live dashboard of the capture and pages for its processes, their
  timelines and state histories, served by OTP's own HTTP server (`:inets` httpd, nothing to
  fetch) from this library's `priv/static`.

      iex> ElixirScope.start(ui: [port: 4040])
      ElixirScope UI at http://127.0.0.1:4040/

      ElixirScope.UI.start(port: 4040)                      # beside a running capture
      ElixirScope.UI.start(port: 4041, store: trace)       # a trace opened with ElixirScope.open/2

  `mix elixir_scope.ui DIR` serves the same pages over a saved trace.

  ## Options

    * `:port` - the TCP port (default `4040`; `0` picks a free one).
    * `:ip` - the address to bind (default `{127, 0, 0, 1}`). Any other address requires the
      token on every request: the printed URL carries it.
    * `:token` - the token (default: 24 random bytes, URL-safe Base64). Every `POST` (the
      control buttons) carries it, whatever the address.
    * `:hosts` - more `Host` names (with their port, `"myhost:4040"`) the server answers to;
      requests naming any other host are refused (DNS rebinding).
    * `:store` - a store to show instead of the running capture (a saved trace opened with
      `ElixirScope.open/2`); its page has no controls.
    * `:mcp` - the MCP endpoint's settings (`POST /mcp`, see `ElixirScope.MCP`):
      `allow_tracing: true` lets an assistant start tracing (default `false`).

  ## What it costs the traced system

  The page polls: the live tail asks for the events after the last seq it has, once a second
  (`GET /api/events?after_seq=`), and the status once a second. Each poll is one bounded query
  (at most 1,000 events) run by the server's request process, never by a traced process; the
  capture itself is unchanged. `bench/ui.exs` measures it.
  """

  alias ElixirScope.{Args, Store}

  @typedoc "A running UI: its URL, port and token."
  @type info :: %{url: String.t(), port: :inet.port_number(), token: String.t(), pid: pid()}

  @doc """
  Starts a UI server. Returns `{:ok, info}` with the URL to open (which carries the token when
  the server is not bound to loopback), or `{:error, reason}` (`:eaddrinuse`, ...).
  """
  @spec start(keyword()) :: {:ok, info()} | {:error, term()}
  def start(opts \\ []) do
    opts = options!(opts)
    ip = opts[:ip]
    port = opts[:port]
    token = opts[:token] || Base.url_encode64(:crypto.strong_rand_bytes(24), padding: false)
    store = opts[:store] || :default

    {:ok, _} = Application.ensure_all_started(:inets)

    config = [
      port: port,
      bind_address: ip,
      server_name: ~c"elixir_scope",
      server_root: String.to_charlist(System.tmp_dir!()),
      document_root: String.to_charlist(Application.app_dir(:elixir_scope, "priv/static")),
      modules: [ElixirScope.UI.HTTP],
      max_body_size: 65_536,
      max_uri_size: 8_192,
      max_header_size: 16_384,
      max_clients: 32,
      keep_alive_timeout: 30,
      # Without it a keep-alive connection's responses waited on delayed ACKs: 44 ms each.
      socket_type: {:ip_comm, [nodelay: true]},
      ipfamily: if(tuple_size(ip) == 8, do: :inet6, else: :inet)
    ]

    # httpd reports a port in use by crashing in its listen code when given socket options:
    # asked here first (a free port is released at once, for httpd to take).
    with :ok <- port_free(ip, port) do
      start_httpd(config, ip, token, store, opts)
    end
  end

  defp port_free(_ip, 0), do: :ok

  defp port_free(ip, port) do
    case :gen_tcp.listen(port, ip: ip, reuseaddr: true) do
      {:ok, socket} -> :gen_tcp.close(socket)
      {:error, reason} -> {:error, reason}
    end
  end

  defp start_httpd(config, ip, token, store, opts) do
    case :inets.start(:httpd, config) do
      {:ok, pid} ->
        actual = :proplists.get_value(:port, :httpd.info(pid))
        loopback = loopback?(ip)
        shown = host_text(ip)

        # The names a request's Host may give: loopback's, the bound address (every local
        # address for a wildcard bind), and those the user named.
        addresses = if wildcard?(ip), do: local_addresses(), else: [ip]

        hosts =
          (["127.0.0.1", "localhost", "[::1]" | Enum.map(addresses, &host_text/1)]
           |> Enum.map(&"#{&1}:#{actual}")) ++ Enum.map(opts[:hosts], &String.downcase/1)

        hosts = Enum.uniq(hosts)

        ui = %{
          port: actual,
          token: token,
          loopback: loopback,
          hosts: hosts,
          context: %{store: store, live: store == :default},
          mcp: %{store: store, allow_tracing: opts[:mcp][:allow_tracing] == true}
        }

        # Keyed by address and port: two UIs may share a port on different addresses.
        :persistent_term.put({__MODULE__, {ip, actual}}, ui)
        :persistent_term.put({__MODULE__, :servers}, [{actual, pid, ip} | servers()])
        release(pid)
        url = "http://#{shown}:#{actual}/" <> if(loopback, do: "", else: "?token=#{token}")
        {:ok, %{url: url, port: actual, token: token, pid: pid}}

      # Another UI (another httpd) already serves that port.
      {:error, {:already_started, _}} ->
        {:error, :eaddrinuse}

      # httpd nests the socket's error in its supervisors' reports: `{:listen, :eaddrinuse}`.
      # (Its listen code can crash instead of reporting, given socket options: then all that is
      # known is that it could not listen.)
      {:error, reason} ->
        {:error, listen_error(reason) || {:cannot_listen, ip, Keyword.fetch!(config, :port)}}
    end
  end

  defp listen_error({:listen, reason}) when is_atom(reason), do: reason

  defp listen_error(t) when is_tuple(t),
    do: t |> Tuple.to_list() |> Enum.find_value(&listen_error/1)

  defp listen_error(_), do: nil

  @doc false
  # The options of start/1, checked (ElixirScope.start/1 checks its :ui before it starts).
  @spec options!(keyword()) :: keyword()
  def options!(opts) do
    opts =
      ElixirScope.Options.validate!(opts,
        port: 4040,
        ip: {127, 0, 0, 1},
        token: nil,
        hosts: [],
        store: nil,
        mcp: []
      )

    port = Args.non_neg_integer!(opts[:port], "port")
    unless port <= 65_535, do: Args.bad!("port", port, "an integer from 0 to 65535")
    token = opts[:token]

    unless token == nil or (is_binary(token) and token =~ ~r/\A[A-Za-z0-9_-]{16,256}\z/),
      do: Args.bad!("token", token, "16 to 256 characters of A-Z, a-z, 0-9, _ and -")

    unless is_list(opts[:hosts]) and Enum.all?(opts[:hosts], &is_binary/1),
      do: Args.bad!("hosts", opts[:hosts], "a list of host:port strings")

    mcp = ElixirScope.Options.validate!(opts[:mcp], allow_tracing: false)

    unless is_boolean(mcp[:allow_tracing]),
      do: Args.bad!("mcp: allow_tracing", mcp[:allow_tracing], "a boolean")

    unless opts[:store] == nil or is_struct(opts[:store], Store),
      do: Args.bad!("store", opts[:store], "an ElixirScope.Store")

    Keyword.merge(opts, ip: ip!(opts[:ip]), port: port)
  end

  @doc "Stops the UI on `port` (every UI when `:all`, the default)."
  @spec stop(:inet.port_number() | :all) :: :ok
  def stop(port \\ :all) do
    {stopping, kept} = Enum.split_with(servers(), fn {p, _, _} -> port == :all or p == port end)

    for {p, pid, ip} <- stopping do
      :inets.stop(:httpd, pid)
      :persistent_term.erase({__MODULE__, {ip, p}})
    end

    :persistent_term.put({__MODULE__, :servers}, kept)
    :ok
  end

  defp servers, do: :persistent_term.get({__MODULE__, :servers}, [])

  @doc false
  # The processes of every running UI's HTTP server (its supervisors, acceptor and manager):
  # ElixirScope never traces them, or each page load would add events to what the page shows
  # (a connection supervisor runs a `:supervisor` callback per connection, recorded whenever
  # supervisors' states are).
  @spec own_processes() :: [pid()]
  def own_processes do
    servers() |> Enum.flat_map(fn {_, pid, _} -> tree(pid) end)
  end

  # Stops any tracing of the server's processes by ElixirScope (they may have been traced for a
  # traced module's calls, or as new processes).
  defp release(pid) do
    case ElixirScope.Store.default() do
      nil -> :ok
      store -> Enum.each(tree(pid), &ElixirScope.Tracer.untrace_pid(&1, store))
    end
  end

  @doc false
  # Called by each request's process: a connection's process was spawned after the UI
  # started, so it has whatever flags a capture gives new processes; it drops them.
  def release_self do
    case ElixirScope.Store.default() do
      nil -> :ok
      store -> ElixirScope.Tracer.untrace_pid(self(), store)
    end
  end

  defp tree(pid) do
    children =
      try do
        for {_, child, type, _} <- Supervisor.which_children(pid),
            is_pid(child),
            do: {child, type}
      catch
        :exit, _ -> []
      end

    [
      pid
      | Enum.flat_map(children, fn {c, type} -> if type == :supervisor, do: tree(c), else: [c] end)
    ]
  end

  defp ip!({_, _, _, _} = ip), do: ip
  defp ip!({_, _, _, _, _, _, _, _} = ip), do: ip

  defp ip!(text) when is_binary(text) do
    case :inet.parse_address(String.to_charlist(text)) do
      {:ok, ip} -> ip
      {:error, _} -> Args.bad!("ip", text, "an IP address, as a tuple or text")
    end
  end

  defp ip!(other), do: Args.bad!("ip", other, "an IP address, as a tuple or text")

  # An address as a Host header names it: IPv6 in brackets.
  defp host_text({_, _, _, _} = ip), do: ip |> :inet.ntoa() |> to_string()
  defp host_text(ip), do: "[#{:inet.ntoa(ip)}]"

  defp wildcard?(ip), do: ip in [{0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}]

  defp local_addresses do
    case :inet.getifaddrs() do
      {:ok, ifs} -> for {_, opts} <- ifs, {:addr, a} <- opts, do: a
      _ -> []
    end
  end

  defp loopback?({127, _, _, _}), do: true
  defp loopback?({0, 0, 0, 0, 0, 0, 0, 1}), do: true
  defp loopback?(_), do: false
end
