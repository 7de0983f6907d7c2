defmodule ElixirScope.UI.HTTP do
  @moduledoc """
  The UI's front door: a module of OTP's `:inets` HTTP server (`httpd` parses the requests;
  this module only answers them). It serves the page, its bundled assets from `priv/static`,
  and the JSON API of `ElixirScope.UI.API` under `/api/`.

  Every request is checked before it is answered:

    * its `Host` must be the server's own (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`, or
      a name given in `hosts:`), so a DNS-rebinding page cannot reach it through another name;
    * an `Origin`, when present, must be `http://` and one of those hosts, so another site open in
      the browser cannot call it;
    * a `POST` must carry the page's token in `x-elixir-scope-token`;
    * a server bound to anything but loopback wants the token on every request: in the page's
      URL (`?token=`), which sets a same-site cookie for the rest.

  Refusals are `403` with a JSON reason; nothing here raises into `httpd`.
  """

  require Record
  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  alias ElixirScope.UI.{API, JSON}

  @static_types %{
    ".js" => ~c"text/javascript; charset=utf-8",
    ".css" => ~c"text/css; charset=utf-8",
    ".html" => ~c"text/html; charset=utf-8",
    ".png" => ~c"image/png",
    ".svg" => ~c"image/svg+xml"
  }

  @doc false
  # httpd's module callback.
  def unquote(:do)(mod_data) do
    ElixirScope.UI.release_self()
    request = mod(mod_data)
    config = request[:config_db]
    key = {:httpd_util.lookup(config, :bind_address), :httpd_util.lookup(config, :port)}

    response =
      case :persistent_term.get({ElixirScope.UI, key}, nil) do
        nil -> json(503, %{error: "the UI is stopping"})
        ui -> answer(request, ui)
      end

    {:proceed, [response: response]}
  catch
    # Nothing escapes into httpd; the details go to the log, not to the client.
    kind, reason ->
      require Logger

      Logger.error(
        "ElixirScope UI request failed: " <> Exception.format(kind, reason, __STACKTRACE__)
      )

      {:proceed, [response: json(500, %{error: "internal error (logged)"})]}
  end

  defp answer(request, ui) do
    headers = Map.new(request[:parsed_header], fn {k, v} -> {to_string(k), to_string(v)} end)
    {path, query} = split_uri(to_string(request[:request_uri]))
    method = request[:method]

    with :ok <- check_host(headers, ui),
         :ok <- check_origin(headers, ui),
         {:ok, cookie} <- check_token(method, path, query, headers, ui) do
      route(method, path, query, request, ui) |> with_cookie(cookie, ui)
    else
      {:refuse, why} -> json(403, %{error: why})
    end
  end

  defp split_uri(uri) do
    case String.split(uri, "?", parts: 2) do
      [path, query] -> {path, URI.decode_query(query)}
      [path] -> {path, %{}}
    end
  rescue
    _ -> {uri, %{}}
  end

  defp check_host(headers, ui) do
    if String.downcase(Map.get(headers, "host", "")) in ui.hosts,
      do: :ok,
      else: {:refuse, "unknown Host: the UI answers only as #{Enum.join(ui.hosts, ", ")}"}
  end

  defp check_origin(headers, ui) do
    case headers["origin"] do
      nil ->
        :ok

      origin ->
        if(String.downcase(origin) in Enum.map(ui.hosts, &("http://" <> &1)),
          do: :ok,
          else: {:refuse, "cross-origin request refused"}
        )
    end
  end

  # The token: a POST always carries it in a header (a page of another origin cannot set one);
  # a server bound beyond loopback also wants it, or its cookie, on every request.
  defp check_token(method, path, query, headers, ui) do
    header = headers["x-elixir-scope-token"]
    cookie = cookie_token(headers["cookie"], cookie_name(ui))

    bearer =
      case headers["authorization"] do
        "Bearer " <> token -> String.trim(token)
        _ -> nil
      end

    cond do
      # MCP clients: on loopback nothing more than the Host and Origin checks (a browser page
      # of another origin is refused by those), elsewhere the token as a bearer.
      path == "/mcp" and (ui.loopback or same?(bearer, ui.token)) ->
        {:ok, nil}

      path == "/mcp" ->
        {:refuse, "this MCP endpoint needs its token: Authorization: Bearer TOKEN"}

      method == ~c"POST" and not same?(header, ui.token) ->
        {:refuse, "missing or wrong x-elixir-scope-token"}

      not ui.loopback and path == "/" and same?(query["token"], ui.token) ->
        {:ok, :set}

      not ui.loopback and not (same?(header, ui.token) or same?(cookie, ui.token)) ->
        {:refuse, "this UI needs its token: open the URL ElixirScope.UI.start/1 printed"}

      true ->
        {:ok, nil}
    end
  end

  defp same?(given, token) when is_binary(given),
    do: byte_size(given) == byte_size(token) and :crypto.hash_equals(given, token)

  defp same?(_, _), do: false

  # One cookie per UI, so that two on one host do not overwrite each other's.
  defp cookie_name(ui), do: "elixir_scope_token_#{ui.port}"

  defp cookie_token(nil, _name), do: nil

  defp cookie_token(cookie, name) do
    cookie
    |> String.split(";")
    |> Enum.find_value(fn part ->
      case String.split(String.trim(part), "=", parts: 2) do
        [^name, value] -> value
        _ -> nil
      end
    end)
  end

  defp route(~c"POST", "/mcp", _query, request, ui) do
    headers = Map.new(request[:parsed_header], fn {k, v} -> {to_string(k), to_string(v)} end)
    version = headers["mcp-protocol-version"]

    cond do
      version != nil and version not in ElixirScope.MCP.versions() ->
        json(400, %{error: "unsupported MCP-Protocol-Version #{inspect(version)}"})

      true ->
        case JSON.decode(IO.iodata_to_binary(request[:entity_body])) do
          {:ok, message} ->
            bearer =
              case headers["authorization"] do
                "Bearer " <> token -> String.trim(token)
                _ -> nil
              end

            ctx = Map.put(ui.mcp, :authenticated, same?(bearer, ui.token))

            case ElixirScope.MCP.handle(message, ctx) do
              nil -> respond(202, ~c"application/json", "", [])
              answer -> json(200, answer)
            end

          {:error, {:invalid_json, why}} ->
            json(400, %{
              jsonrpc: "2.0",
              id: nil,
              error: %{code: -32700, message: "parse error: " <> why}
            })
        end
    end
  end

  # No stream of server-initiated messages: the server sends none.
  defp route(_method, "/mcp", _query, _request, _ui),
    do: json(405, %{error: "POST JSON-RPC messages to /mcp; no event stream is offered"})

  defp route(~c"GET", "/", _query, _request, ui), do: index(ui)
  defp route(~c"GET", "/static/" <> name, _query, _request, _ui), do: static(name)

  defp route(method, "/api/" <> route, query, request, ui) do
    with {:ok, verb} <- verb(method),
         {:ok, params} <- params(verb, query, request) do
      {status, body} = API.handle(verb, route, params, ui.context)
      json(status, body)
    else
      {:error, status, why} -> json(status, %{error: why})
    end
  end

  defp route(_method, path, _query, _request, _ui), do: json(404, %{error: "not found: #{path}"})

  defp verb(~c"GET"), do: {:ok, :get}
  defp verb(~c"POST"), do: {:ok, :post}
  defp verb(_), do: {:error, 405, "method not allowed"}

  defp params(:get, query, _request), do: {:ok, query}

  defp params(:post, _query, request) do
    case JSON.decode(IO.iodata_to_binary(request[:entity_body])) do
      {:ok, body} -> {:ok, body}
      {:error, {:invalid_json, why}} -> {:error, 400, "invalid JSON body: " <> why}
    end
  end

  defp index(ui) do
    case File.read(Path.join(static_dir(), "index.html")) do
      {:ok, html} ->
        html = String.replace(html, "__ELIXIR_SCOPE_TOKEN__", ui.token)
        respond(200, @static_types[".html"], html, [{~c"cache-control", ~c"no-store"}])

      {:error, _} ->
        json(500, %{
          error: "the UI's page is missing from priv/static: rebuild it with scripts/assets"
        })
    end
  end

  defp static(name) do
    ext = Path.extname(name)

    with true <- name =~ ~r/\A[a-z0-9_-]+(\.[a-z0-9]+)+\z/,
         type when type != nil <- @static_types[ext],
         {:ok, bytes} <- File.read(Path.join(static_dir(), name)) do
      respond(200, type, bytes, [{~c"cache-control", ~c"no-cache"}])
    else
      _ -> json(404, %{error: "not found: /static/#{name}"})
    end
  end

  defp static_dir, do: Application.app_dir(:elixir_scope, "priv/static")

  defp json(status, body),
    do:
      respond(status, ~c"application/json", JSON.encode!(body), [
        {~c"cache-control", ~c"no-store"}
      ])

  defp respond(status, type, body, extra) do
    {:response,
     [
       code: status,
       content_type: type,
       content_length: Integer.to_charlist(byte_size(body)),
       "x-content-type-options": ~c"nosniff",
       "x-frame-options": ~c"DENY",
       "content-security-policy":
         ~c"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
     ] ++ extra, body}
  end

  # The token's URL sets the cookie and sends the browser to `/`, so the token does not stay
  # in the address bar and the history.
  defp with_cookie({:response, _head, _body}, :set, ui) do
    cookie = "#{cookie_name(ui)}=#{ui.token}; Path=/; HttpOnly; SameSite=Strict"

    {:response,
     [
       code: 303,
       location: ~c"/",
       content_length: ~c"0",
       "set-cookie": String.to_charlist(cookie)
     ], ""}
  end

  defp with_cookie(response, _, _ui), do: response
end
