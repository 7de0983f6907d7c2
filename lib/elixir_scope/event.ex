defmodule ElixirScope.Event do
  @moduledoc """
  One captured event.

  | field  | meaning |
  |--------|---------|
  | `seq`  | position in the store: strictly increasing, no gaps among stored events |
  | `ts`   | monotonic nanoseconds (`System.monotonic_time(:nanosecond)`'s clock); `datetime/1` converts it |
  | `kind` | what happened, see `t:kind/0` |
  | `pid`  | the process it happened in |
  | `peer` | the other side: spawned child, link peer, message destination (a pid, or a registered name or remote pid as given to `send/2`), else `nil` |
  | `mfa`  | `{module, function, arity}` of calls, returns, exceptions and of a spawn's initial call |
  | `data` | the payload: message, arguments, return value, `{class, reason}`, exit reason, registered name, state |
  | `node` | the node that captured it |

  A payload over the store's `max_payload_bytes` is an `ElixirScope.Event.Truncated` struct
  with the original size, a hash and a prefix of the encoded term. In a trace read from disk, a
  payload that is not a well-formed term is an `ElixirScope.Event.Undecodable` struct, and what
  the reading VM cannot represent has stand-ins (see `ElixirScope.Persist`).

      ElixirScope.Query.events(kind: :send, limit: 1)
      #=> [#ElixirScope.Event<#12 send #PID<0.120.0> -> #PID<0.121.0> {:increment, 1}>]
  """

  alias ElixirScope.Store

  @enforce_keys [:seq, :ts, :kind]
  defstruct [:seq, :ts, :kind, :pid, :peer, :mfa, :data, :node]

  @typedoc "An event's position in its store."
  @type seq :: pos_integer()

  @typedoc "Monotonic time in nanoseconds."
  @type timestamp :: integer()

  @typedoc """
  What happened. `:timeout` is a `receive ... after` (`Process.sleep/1` too) that timed out:
  the VM reports it as receiving the atom `:timeout` from no process. A timer that delivers the
  bare atom `:timeout` (`Process.send_after(pid, :timeout, t)`) looks exactly the same to the
  VM and is recorded as a `:timeout` too; a timer message of any other shape is a `:receive`.

  `:metrics` is a sample of a process's load (`data` is `{message_queue_len, reductions,
  memory}`, taken by the capture's `metrics:` option). `:stack` is the callers of a call a
  watch asked for them (`stack: true`): `{call_seq, frames}`, innermost first, each frame as the
  VM prints it. `:control` is ElixirScope changing what it
  captures, with `data` a map saying what and why (`%{event: :limit, ...}`, `%{event:
  :watch_stopped, ...}`, ...): a trace says why its detail changed.
  """
  @type kind ::
          :spawn
          | :exit
          | :link
          | :unlink
          | :register
          | :unregister
          | :send
          | :send_to_dead
          | :receive
          | :call
          | :return
          | :exception
          | :state
          | :supervisor
          | :var
          | :timeout
          | :traced
          | :metrics
          | :control
          | :stack

  @type t :: %__MODULE__{
          seq: seq(),
          ts: timestamp(),
          kind: kind(),
          pid: pid() | nil,
          peer: pid() | port() | atom() | {atom(), node()} | nil,
          mfa: mfa() | nil,
          data: term(),
          node: node()
        }

  @kinds [
    :spawn,
    :exit,
    :link,
    :unlink,
    :register,
    :unregister,
    :send,
    :send_to_dead,
    :receive,
    :call,
    :return,
    :exception,
    :state,
    :supervisor,
    :var,
    :timeout,
    :traced,
    :metrics,
    :control,
    :stack
  ]

  @doc """
  Every event kind.

  ## Examples

      iex> :send in ElixirScope.Event.kinds()
      true
  """
  @spec kinds() :: [kind()]
  def kinds, do: @kinds

  defmodule Truncated do
    @moduledoc """
    What is kept of a payload over its cap: the size of its encoding, a hash, and its first
    bytes (a prefix of the External Term Format encoding). The cap is the store's
    `max_payload_bytes`, and 256 KiB for a state (states are kept whole up to there, however
    small `max_payload_bytes` is).

    * `size` - bytes of the whole encoding. `exact: false` means the tracer stopped counting
      and `size` is a lower bound: past the cap it counts a payload over at most a sixteenth
      as many subterms as the cap has bytes, so a big term costs about its cap to capture (a
      binary's bytes are counted by its size, never read).
    * `hash` - xxh3, seeded with `size`, of the bytes encoded up to the cap: equal payloads
      have equal hashes.
    * `size: :unknown` means the store's byte budget was spent and nothing was kept.

    Capturing a big payload costs the traced process about its cap: the rest is counted,
    never copied.
    """
    defstruct [:size, :hash, :prefix, exact: true]

    @type t :: %__MODULE__{
            size: non_neg_integer() | :unknown,
            exact: boolean(),
            hash: non_neg_integer() | nil,
            prefix: binary()
          }
  end

  defmodule Undecodable do
    @moduledoc """
    A payload of a trace read from disk that is not a well-formed term (the file was damaged
    or crafted, and its checksum still matched): its bytes, as stored.
    """
    defstruct [:bytes]

    @type t :: %__MODULE__{bytes: binary()}
  end

  # Flag bits set by the native capture (see elixir_scope_core::event::flags).
  import Bitwise
  @truncated 1
  @peer_in_payload 2
  @payload_dropped 4
  # Set by the query NIF: the payload is already a term, not ETF bytes.
  @decoded 0x100

  @doc false
  @spec from_native(tuple(), node()) :: t()
  def from_native({seq, ts, kind, pid, peer, mfa, payload, flags}, node) do
    {peer, data} = decode_payload(peer, payload, flags)

    %__MODULE__{
      seq: seq,
      ts: ts,
      kind: kind,
      pid: pid,
      peer: peer,
      mfa: mfa,
      data: data,
      node: node
    }
  end

  defp decode_payload(_peer, _payload, flags) when (flags &&& @payload_dropped) != 0 do
    {nil, %Truncated{size: :unknown, hash: nil, prefix: ""}}
  end

  # The size's top bit says it is a lower bound.
  @inexact 0x8000_0000_0000_0000

  defp decode_payload(peer, <<len::little-64, hash::little-64, prefix::binary>>, flags)
       when (flags &&& @truncated) != 0 do
    size = len &&& @inexact - 1
    {peer, %Truncated{size: size, exact: len < @inexact, hash: hash, prefix: prefix}}
  end

  defp decode_payload(_peer, payload, flags) when (flags &&& @peer_in_payload) != 0 do
    if (flags &&& @decoded) != 0 do
      payload
    else
      case safe_decode(payload) do
        {:ok, {peer, data}} -> {peer, data}
        _ -> {nil, %Undecodable{bytes: payload}}
      end
    end
  end

  defp decode_payload(peer, nil, _flags), do: {peer, nil}
  defp decode_payload(peer, data, flags) when (flags &&& @decoded) != 0, do: {peer, data}

  defp decode_payload(peer, payload, _flags) do
    case safe_decode(payload) do
      {:ok, data} -> {peer, data}
      :error -> {peer, %Undecodable{bytes: payload}}
    end
  end

  # The native layer decodes every well-formed payload; what reaches here is not one.
  defp safe_decode(bytes) do
    {:ok, :erlang.binary_to_term(bytes, [:safe])}
  rescue
    ArgumentError -> :error
  end

  @doc """
  The event's time as a UTC `DateTime` (using the store's wall-clock offset; with no store, this
  VM's).
  """
  @spec datetime(t(), Store.t() | nil) :: DateTime.t()
  def datetime(event, store \\ Store.default())

  def datetime(%__MODULE__{ts: ts}, nil),
    do: Store.datetime!(ts, :erlang.time_offset(:nanosecond))

  def datetime(%__MODULE__{ts: ts}, store), do: Store.to_datetime(store, ts)
  def datetime(other, _store), do: bad_event!(other)

  @doc """
  A one-line human description of the event, as the `Inspect` implementation shows it.
  `limit:` bounds how much of each term is shown (as `inspect/2`'s `:limit`, default 12).

  ## Examples

      iex> e = %ElixirScope.Event{seq: 3, ts: 0, kind: :exit, pid: self(), data: :normal}
      iex> ElixirScope.Event.describe(e) =~ "exit"
      true
  """
  @spec describe(t(), keyword()) :: String.t()
  def describe(event, opts \\ [])

  def describe(%__MODULE__{} = e, opts) do
    limit =
      case ElixirScope.Options.validate!(opts, limit: 12)[:limit] do
        n when (is_integer(n) and n >= 0) or n == :infinity -> n
        other -> ElixirScope.Args.bad!(:limit, other, "a non-negative integer or :infinity")
      end

    show = &inspect(&1, limit: limit, printable_limit: 80)

    body =
      case e.kind do
        k when k in [:send, :send_to_dead] ->
          "#{show.(e.pid)} -> #{show.(e.peer)} #{show.(e.data)}"

        :receive ->
          "#{show.(e.pid)} <- #{show.(e.data)}"

        :timeout ->
          "#{show.(e.pid)} receive timed out"

        :traced ->
          "#{show.(e.pid)} traced from here"

        :call ->
          "#{show.(e.pid)} #{mfa(e.mfa)}(#{args(e.data, show)})"

        :return ->
          "#{show.(e.pid)} #{mfa(e.mfa)} => #{show.(e.data)}"

        :exception ->
          "#{show.(e.pid)} #{mfa(e.mfa)} raised #{show.(e.data)}"

        :spawn ->
          "#{show.(e.pid)} spawned #{show.(e.peer)} #{mfa(e.mfa)}"

        k when k in [:link, :unlink] ->
          "#{show.(e.pid)} #{k} #{show.(e.peer)}"

        k when k in [:register, :unregister] ->
          "#{show.(e.pid)} #{k} #{show.(e.data)}"

        :exit ->
          "#{show.(e.pid)} exited #{show.(e.data)}"

        :state ->
          "#{show.(e.pid)} after #{mfa(e.mfa)}: #{show.(e.data)}"

        :var ->
          case e.data do
            {:"$call", line, _} -> "#{show.(e.pid)} entered #{mfa(e.mfa)} (line #{line})"
            {name, line, value} -> "#{show.(e.pid)} #{name} = #{show.(value)} (line #{line})"
            other -> "#{show.(e.pid)} #{show.(other)}"
          end

        :metrics ->
          case e.data do
            {queue, reductions, memory} ->
              "#{show.(e.pid)} mailbox #{queue}, reductions #{reductions}, memory #{memory} B"

            other ->
              "#{show.(e.pid)} #{show.(other)}"
          end

        :control ->
          "#{show.(e.data)}"

        :stack ->
          case e.data do
            {call, frames} when is_list(frames) ->
              "#{show.(e.pid)} callers of ##{call}: #{Enum.join(frames, " < ")}"

            other ->
              "#{show.(e.pid)} #{show.(other)}"
          end

        :supervisor ->
          case e.data do
            %{action: action, id: id, pid: pid, old_pid: old} ->
              "#{show.(e.pid)} #{action} #{show.(id)} #{if old, do: show.(old) <> " -> ", else: ""}#{show.(pid)}"

            other ->
              "#{show.(e.pid)} #{show.(other)}"
          end

        _ ->
          "#{show.(e.pid)} #{show.(e.data)}"
      end

    "##{e.seq} #{e.kind} #{body}"
  end

  def describe(other, _opts), do: bad_event!(other)

  defp bad_event!(other), do: ElixirScope.Args.bad!("event", other, "an ElixirScope.Event")

  defp mfa({m, f, a}), do: "#{inspect(m)}.#{f}/#{a}"
  defp mfa(_), do: "?"

  defp args(list, show) when is_list(list), do: Enum.map_join(list, ", ", show)
  defp args(other, show), do: show.(other)

  defimpl Inspect do
    def inspect(event, _opts), do: "#ElixirScope.Event<#{ElixirScope.Event.describe(event)}>"
  end
end
