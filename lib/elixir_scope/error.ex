defmodule ElixirScope.Error do
  @moduledoc """
  Raised by the bang (`!`) variants of ElixirScope's functions.

  The `:reason` field holds the same term the non-bang variant returns as `{:error, reason}`, so
  code can match on it:

      try do
        ElixirScope.trace!(:no_such_name)
      rescue
        e in ElixirScope.Error -> e.reason
      end
      #=> {:unknown_target, :no_such_name}
  """
  defexception [:reason]

  @type t :: %__MODULE__{reason: term()}

  @typedoc """
  Why a trace on disk could not be read or written. Each names the file or directory:

    * `{:enoent, path}` - not there
    * `{:not_a_regular_file, path}` - a FIFO, a device or a socket: refused before reading
    * `{:not_a_trace, path}` - not an ElixirScope segment or manifest (or a directory without one)
    * `{:newer_format, path, version}` - written by a newer ElixirScope
    * `{:corrupt_segment, path, offset}` - damaged bytes from `offset` on
    * `{:trace_exists, path}` - a directory that already holds a trace, given to write a new one
    * `{posix, path}` - any other error of the file system, by its POSIX name (`:eacces`,
      `:enospc`, `:eio`, ...)
    * `:no_clock` - a time window given as `DateTime`s for a trace without a clock
    * `:already_persisted` - the store is already being written
  """
  @type file_reason ::
          {:enoent | :not_a_regular_file | :not_a_trace | :trace_exists | atom(), Path.t()}
          | {:newer_format, Path.t(), pos_integer()}
          | {:corrupt_segment, Path.t(), non_neg_integer()}
          | :no_clock
          | :already_persisted

  @impl true
  def message(%__MODULE__{reason: reason}), do: describe(reason)

  @doc """
  A sentence describing an error reason returned by ElixirScope.

  ## Examples

      iex> ElixirScope.Error.describe(:not_running)
      "ElixirScope is not running; start it with ElixirScope.start/1"
  """
  @spec describe(term()) :: String.t()
  def describe(:not_running), do: "ElixirScope is not running; start it with ElixirScope.start/1"
  def describe(:already_running), do: "ElixirScope is already running; stop it first"
  def describe({:dead_process, pid}), do: "process #{inspect(pid)} is not alive"

  def describe({:not_tracked, target, why}),
    do: "#{inspect(target)} records no variables: " <> not_tracked(why)

  def describe({:not_bound, var, target, recorded}),
    do:
      "#{inspect(target)} binds no variable #{inspect(var)}; it records " <>
        if(recorded == [], do: "none", else: Enum.map_join(recorded, ", ", &inspect/1))

  def describe({:unknown_target, t}),
    do: "#{inspect(t)} is neither a registered name nor a module"

  def describe({:already_traced, pid, tracer}),
    do: "process #{inspect(pid)} is already traced by #{inspect(tracer)}; it was left alone"

  def describe({:refused, mod, why}), do: "refusing to trace #{inspect(mod)}: #{why}"
  def describe({:module_not_loaded, mod}), do: "module #{inspect(mod)} could not be loaded"
  def describe({:remote_pid, pid}), do: "#{inspect(pid)} lives on another node"

  def describe({:pattern_in_use, mfas}) when is_list(mfas) do
    shown =
      mfas
      |> Enum.take(5)
      |> Enum.map_join(", ", &Exception.format_mfa(elem(&1, 0), elem(&1, 1), elem(&1, 2)))

    more = if length(mfas) > 5, do: " and #{length(mfas) - 5} more", else: ""

    "another tool (:dbg, recon, a profiler) has trace patterns on #{shown}#{more}; " <>
      "they were left alone (override: true replaces them)"
  end

  def describe({:enoent, path}), do: "#{path}: no such file or directory"

  def describe({:not_a_regular_file, path}),
    do: "#{path} is not a regular file (a FIFO, device or socket): it was not read"

  def describe({:not_a_trace, path}),
    do: "#{path} is not an ElixirScope trace (no MANIFEST, or not a segment file)"

  def describe({:newer_format, path, v}),
    do: "#{path} has format version #{v}, newer than this ElixirScope reads: upgrade ElixirScope"

  def describe({:corrupt_segment, path, offset}), do: "#{path} is damaged at byte #{offset}"

  def describe({:trace_exists, path}),
    do:
      "#{path} already holds a trace; open it with ElixirScope.open/1 or choose an empty directory"

  def describe(:no_clock),
    do: "the trace has no clock: give :since and :until as monotonic nanoseconds"

  def describe(:already_persisted), do: "the store is already being written to disk"
  def describe(:already_done), do: "that was already done"

  def describe({posix, path}) when is_atom(posix) and is_binary(path),
    do: "#{path}: #{:file.format_error(posix)}"

  def describe(other), do: "ElixirScope error: #{inspect(other)}"

  defp not_tracked(:not_loaded), do: "no such module is loaded"
  defp not_tracked(:no_track), do: "its module does not `use ElixirScope.Track`"

  defp not_tracked(:disabled),
    do:
      "tracking was off when it compiled (config :elixir_scope, track: false; the :prod default)"

  defp not_tracked(:not_annotated),
    do: "it has no @scope annotation (nor `use ElixirScope.Track, all: true`)"

  defp not_tracked(other), do: inspect(other)
end
