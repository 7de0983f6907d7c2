defmodule ElixirScope.Crash do
  @moduledoc """
  Why a process died, as `ElixirScope.Query.why_crashed/2` reports it.

  * `reason` - the exit reason; for an exception, `exception` and `stacktrace` are split out.
  * `exit` - the `:exit` event.
  * `raised` - for an abnormal exit, the `:exception` events of the traced calls the fatal
    exception went through, innermost first.
  * `last_messages` - the last messages that arrived in its mailbox before it started failing
    (`:receive` events).
  * `state` - its last recorded state before exiting, or `:unknown`.
  * `linked` - processes linked to it (per the traced `:link` and `:unlink` events) and how they
    exited, before or after it, if they did: `%{pid: pid, exit: reason | :alive_or_unknown}`.
  * `exit_signal_from` - when it was taken down by a linked process's exit signal (it died with
    the reason that process had just exited with), that process; `nil` when it failed itself.
    The reason's exception and stacktrace are then that process's, not split out here.
    `exit_signal_inferred` is true when no link between them was traced (it was made before
    tracing started) and the signal is inferred: that process exited just before with the very
    same reason, stacktrace included, and this one raised nothing traced.
  * `cause` - the report of `exit_signal_from`, following the chain back (at most 16 links) to
    the process that failed itself; `nil` when there is none or it is not recorded.

  `format/1` renders it for reading in IEx; `inspect/1` shows a one-line summary.
  """

  defstruct [
    :pid,
    :reason,
    :exception,
    :stacktrace,
    :exit,
    raised: [],
    last_messages: [],
    state: :unknown,
    linked: [],
    exit_signal_from: nil,
    exit_signal_inferred: false,
    cause: nil
  ]

  @type t :: %__MODULE__{
          pid: pid(),
          reason: term(),
          exception: Exception.t() | nil,
          stacktrace: Exception.stacktrace() | nil,
          exit: ElixirScope.Event.t(),
          raised: [ElixirScope.Event.t()],
          last_messages: [ElixirScope.Event.t()],
          state: term(),
          linked: [%{pid: pid(), exit: term()}],
          exit_signal_from: pid() | nil,
          exit_signal_inferred: boolean(),
          cause: t() | nil
        }

  @doc false
  @spec split_reason(term()) :: {Exception.t() | nil, Exception.stacktrace() | nil}
  def split_reason({%{__exception__: true} = e, stack}) when is_list(stack), do: {e, stack}

  def split_reason({reason, [{m, f, a, _} | _] = stack})
      when is_atom(m) and is_atom(f) and (is_integer(a) or is_list(a)),
      do: {Exception.normalize(:error, reason, stack), stack}

  def split_reason(_), do: {nil, nil}

  @doc """
  The report as readable text.

  ## Examples

      iex> crash = %ElixirScope.Crash{pid: self(), reason: :boom, exit: %ElixirScope.Event{seq: 9, ts: 0, kind: :exit, data: :boom}}
      iex> ElixirScope.Crash.format(crash) =~ "exited with :boom"
      true
  """
  @spec format(t()) :: String.t()
  def format(%__MODULE__{} = c) do
    show = &inspect(&1, pretty: true, limit: 20, printable_limit: 200)

    headline =
      if c.exit_signal_from,
        do:
          "#{inspect(c.pid)} was killed by an exit signal from linked process " <>
            "#{inspect(c.exit_signal_from)}" <>
            if(c.exit_signal_inferred,
              do: " (inferred: no link was traced, but it exited just before with this reason)",
              else: ""
            ) <> ": #{show.(c.reason)}",
        else: own_headline(c, show)

    [
      headline <> exit_seq(c.exit),
      c.stacktrace &&
        "  stacktrace:\n" <> String.trim_trailing(format_stacktrace(c.stacktrace)),
      c.raised != [] &&
        "  raised through:\n" <>
          Enum.map_join(c.raised, "\n", &("    " <> ElixirScope.Event.describe(&1))),
      "  state before: " <>
        if(c.state == :unknown, do: "unknown (no state recorded)", else: show.(c.state)),
      "  last messages received:" <>
        if(c.last_messages == [],
          do: " none recorded",
          else:
            "\n" <>
              Enum.map_join(c.last_messages, "\n", &("    " <> ElixirScope.Event.describe(&1)))
        ),
      "  linked processes:" <>
        if(c.linked == [],
          do: " none recorded",
          else:
            "\n" <> Enum.map_join(c.linked, "\n", &"    #{inspect(&1.pid)}: #{show.(&1.exit)}")
        ),
      cause_text(c)
    ]
    |> Enum.filter(&is_binary/1)
    |> Enum.join("\n")
  end

  def format(other) do
    ElixirScope.Args.bad!(
      "crash",
      other,
      "an ElixirScope.Crash (from ElixirScope.Query.why_crashed/2)"
    )
  end

  # A trace read in another VM names the modules and functions this VM has no atom for as
  # binaries: Elixir's formatters take atoms only, so such a stacktrace is written here.
  defp format_stacktrace(stack) do
    if Enum.all?(stack, &match?({m, f, _, _} when is_atom(m) and is_atom(f), &1)) do
      Exception.format_stacktrace(stack)
    else
      Enum.map_join(stack, "", fn
        {m, f, a, loc} ->
          arity = if is_list(a), do: length(a), else: a
          where = if is_list(loc) and loc[:file], do: "#{loc[:file]}:#{loc[:line]}: ", else: ""
          "    #{where}#{module_name(m)}.#{fun_name(f)}/#{arity}\n"

        other ->
          "    #{inspect(other)}\n"
      end)
    end
  end

  defp module_name("Elixir." <> m), do: m
  defp module_name(m) when is_binary(m), do: ":" <> m
  defp module_name(m), do: inspect(m)

  defp fun_name(f) when is_binary(f), do: f
  defp fun_name(f), do: to_string(f)

  # An exception's message, also for one whose module this VM does not have.
  defp message(e) do
    Exception.message(e)
  rescue
    _ -> inspect(Map.drop(e, [:__struct__, :__exception__]))
  end

  defp cause_text(%{cause: %__MODULE__{} = cause}),
    do: "because:\n" <> format(cause)

  defp cause_text(%{exit_signal_from: pid}) when is_pid(pid),
    do: "because: #{inspect(pid)} exited first (its own report is not followed further)"

  defp cause_text(_), do: nil

  defp own_headline(c, show) do
    if c.exception,
      do:
        "#{inspect(c.pid)} exited: ** (#{inspect(c.exception.__struct__)}) #{message(c.exception)}",
      else: "#{inspect(c.pid)} exited with #{show.(c.reason)}"
  end

  defp exit_seq(%ElixirScope.Event{seq: seq}), do: " (event ##{seq})"
  defp exit_seq(_), do: ""

  defimpl Inspect do
    def inspect(c, _opts) do
      "#ElixirScope.Crash<#{Kernel.inspect(c.pid)} exited with #{Kernel.inspect(c.reason, limit: 5)}>"
    end
  end
end
