defmodule Mix.Tasks.Compile.ElixirScopeNative do
  @shortdoc "Builds ElixirScope's Rust NIF with cargo"
  @moduledoc """
  Builds the `elixir_scope_nif` crate with `cargo build --release` and copies the library to
  `priv/native/`, where `ElixirScope.Native` loads it from.

  It is listed in the project's `compilers:` after Elixir's own, so it runs on every `mix compile`
  and does nothing when no Rust source, manifest or lock file is newer than the built library.
  When it did build, it reloads `ElixirScope.Native` in the running VM, so `mix test` and
  `iex -S mix` see the fresh NIFs.

  ## Requirements

  `cargo` on the `PATH` (or in `~/.cargo/bin`). Without it the task fails with a message saying
  how to install Rust, except where the native library is not needed:

    * with `ELIXIR_SCOPE_BUILD=false`, it is never built;
    * in the `:prod` environment without cargo, it is not built, and it says so once: an
      application that uses `ElixirScope.Track` compiles and runs in production with tracking
      off (`config :elixir_scope, track: false`, the `:prod` default), which needs no native
      code. Capture functions then raise the load error, which says how to build.

  ## Precompiled libraries

  Like `rustler_precompiled`, it can take a library built beforehand instead of building one:
  when a base URL is given (`ELIXIR_SCOPE_PRECOMPILED_URL`, or `config :elixir_scope,
  precompiled_url: ...`) and the package holds the checksum file (`checksum-elixir_scope_nif.exs`,
  written with the artifacts by `mix elixir_scope.precompile`), it downloads over HTTPS (the
  server's certificate checked; plain HTTP from this machine only)
  `<url>/<artifact>`, where the artifact is named by the package version, the VM's NIF version
  and the target triple (see `artifact_name/0`), checks its SHA-256 against the checksum file
  and installs it. A checksum that does not match is refused with a message; an artifact that
  cannot be downloaded falls back to building from source (when cargo exists, else the message
  says what to do). `ELIXIR_SCOPE_BUILD=true` always builds from source.

  ## Options

    * `--force` - build even when nothing changed.

  ## Environment

    * `ELIXIR_SCOPE_CARGO_PROFILE` - `release` (default) or `dev`.
  """
  use Mix.Task.Compiler

  @crate "elixir_scope_nif"

  @impl true
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, switches: [force: :boolean])
    root = Path.expand("../../..", __DIR__) |> project_root()
    dest = Path.join([Mix.Project.app_path(), "priv", "native"])
    lib = Path.join(dest, "#{@crate}.so")

    cond do
      skip?() ->
        {:noop, []}

      opts[:force] || stale?(root, lib) ->
        case precompiled(root, dest, lib) do
          :ok -> :ok
          :build -> build!(root, dest, lib)
        end

        reload_native()
        {:ok, []}

      true ->
        {:noop, []}
    end
  end

  # Whether the native library is not to be built (see the moduledoc).
  defp skip? do
    cond do
      System.get_env("ELIXIR_SCOPE_BUILD") == "false" ->
        true

      # (A dependency is compiled with Mix.env() :prod whatever the build: the user's own
      # environment says whether this is a production build.)
      System.get_env("MIX_ENV", "dev") == "prod" and find_cargo() == nil and
          precompiled_url() == nil ->
        Mix.shell().info(
          "ElixirScope: no cargo found, the native library is not built (:prod). Tracked " <>
            "functions compile with tracking off; capture needs the library (install Rust and " <>
            "recompile)."
        )

        true

      true ->
        false
    end
  end

  @checksums "checksum-elixir_scope_nif.exs"

  @doc false
  # The artifact of this package version for this VM: `elixir_scope_nif-v<version>-nif-<nif
  # version>-<target>.so.tar.gz`.
  def artifact_name do
    version = Mix.Project.config()[:version] || "0.0.0"
    nif = :erlang.system_info(:nif_version)
    "elixir_scope_nif-v#{version}-nif-#{nif}-#{target()}.so.tar.gz"
  end

  defp precompiled_url do
    System.get_env("ELIXIR_SCOPE_PRECOMPILED_URL") ||
      Application.get_env(:elixir_scope, :precompiled_url)
  end

  # The target triple of this VM, as the artifacts are named (Rust's names: the OS version a
  # system architecture string carries is left out).
  defp target do
    arch_string = :erlang.system_info(:system_architecture) |> List.to_string()

    case String.split(arch_string, "-") do
      [arch, _vendor, "linux", abi | _] -> "#{arch}-unknown-linux-#{abi}"
      [arch, _vendor, "linux"] -> "#{arch}-unknown-linux-gnu"
      [arch, _vendor, "darwin" <> _ | _] -> "#{arch}-apple-darwin"
      [arch, _vendor, "freebsd" <> _ | _] -> "#{arch}-unknown-freebsd"
      _ -> arch_string
    end
  end

  @doc false
  # :ok when a precompiled library was installed at `lib`, :build when it is to be built from
  # the sources at `root` (whose checksum file it reads).
  def precompiled(root, dest, lib) do
    url = precompiled_url()

    sums = Path.join(root, @checksums)

    cond do
      System.get_env("ELIXIR_SCOPE_BUILD") == "true" or url == nil or not File.exists?(sums) ->
        :build

      true ->
        case fetch_precompiled(url, sums, dest, lib) do
          :ok ->
            :ok

          {:error, :checksum, name} ->
            Mix.raise(
              "ElixirScope's precompiled library #{name} does not match its checksum in " <>
                "#{@checksums}: refused. Remove it from the server, or set " <>
                "ELIXIR_SCOPE_BUILD=true to build from source (needs Rust's cargo)."
            )

          {:error, why, name} ->
            if find_cargo() do
              Mix.shell().info(
                "ElixirScope: no precompiled #{name} (#{inspect(why)}): building from source"
              )

              :build
            else
              Mix.raise(
                "ElixirScope found no precompiled library #{name} at #{url} (#{inspect(why)}), and no " <>
                  "cargo to build one: install Rust with rustup (https://rustup.rs), or point " <>
                  "ELIXIR_SCOPE_PRECOMPILED_URL at a server that has it."
              )
            end
        end
    end
  end

  @doc false
  # Downloads this VM's artifact from `url`, checks it against the checksum file `sums` and
  # installs its library at `lib`: `:ok`, `{:error, :checksum, name}`, or `{:error, why, name}`
  # when it cannot be had.
  def fetch_precompiled(url, sums, dest, lib) do
    name = artifact_name()
    {checksums, _} = Code.eval_file(sums)

    with {:ok, expected} <- Map.fetch(checksums, name) |> or_error(:not_listed),
         {:ok, body} <- download(String.trim_trailing(url, "/") <> "/" <> name),
         :ok <- check(body, expected),
         {:ok, [{_, so}]} <- :erl_tar.extract({:binary, body}, [:memory, :compressed]) do
      File.mkdir_p!(dest)
      tmp = lib <> ".tmp"
      File.write!(tmp, so)
      File.rename!(tmp, lib)
      :ok
    else
      {:error, :checksum} -> {:error, :checksum, name}
      {:error, why} -> {:error, why, name}
      other -> {:error, other, name}
    end
  end

  defp or_error(:error, why), do: {:error, why}
  defp or_error(ok, _why), do: ok

  defp check(body, expected) do
    actual = :crypto.hash(:sha256, body) |> Base.encode16(case: :lower)
    if actual == String.downcase(expected), do: :ok, else: {:error, :checksum}
  end

  # HTTPS with the peer's certificate checked against the system's CAs; plain HTTP only from
  # this machine (a local mirror, the tests). The checksum is checked either way.
  defp download(url) do
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, _} = Application.ensure_all_started(:ssl)

    with {:ok, tls} <- tls_options(URI.parse(url)) do
      request = {String.to_charlist(url), []}
      opts = [timeout: 60_000, connect_timeout: 10_000, autoredirect: false] ++ tls
      get(request, opts)
    end
  end

  defp tls_options(%URI{scheme: "https", host: host}) do
    {:ok,
     [
       ssl: [
         verify: :verify_peer,
         cacerts: :public_key.cacerts_get(),
         server_name_indication: String.to_charlist(host),
         customize_hostname_check: [
           match_fun: :public_key.pkix_verify_hostname_match_fun(:https)
         ]
       ]
     ]}
  end

  defp tls_options(%URI{scheme: "http", host: host}) when host in ["127.0.0.1", "localhost"],
    do: {:ok, []}

  defp tls_options(_uri), do: {:error, :not_https}

  defp get(request, opts) do
    case :httpc.request(:get, request, opts, body_format: :binary) do
      {:ok, {{_, 200, _}, _, body}} -> {:ok, body}
      {:ok, {{_, status, _}, _, _}} -> {:error, {:http, status}}
      {:error, reason} -> {:error, reason}
    end
  end

  @impl true
  def clean do
    File.rm_rf(Path.join([Mix.Project.app_path(), "priv", "native"]))
    :ok
  end

  # The directory holding Cargo.toml: the project itself, or deps/elixir_scope for a user.
  defp project_root(guess) do
    if File.exists?(Path.join(guess, "Cargo.toml")), do: guess, else: File.cwd!()
  end

  defp stale?(root, lib) do
    case File.stat(lib, time: :posix) do
      {:ok, %{mtime: built}} -> Enum.any?(sources(root), &newer?(&1, built))
      {:error, _} -> true
    end
  end

  defp sources(root) do
    [Path.join(root, "Cargo.toml"), Path.join(root, "Cargo.lock")] ++
      Path.wildcard(Path.join(root, "native/*/Cargo.toml")) ++
      Path.wildcard(Path.join(root, "native/*/src/**/*.rs"))
  end

  defp newer?(path, built) do
    match?({:ok, %{mtime: m}} when m > built, File.stat(path, time: :posix))
  end

  defp build!(root, dest, lib) do
    cargo = cargo!()
    profile = System.get_env("ELIXIR_SCOPE_CARGO_PROFILE", "release")
    target_dir = Path.join(root, "target")
    args = ["build", "-p", @crate, "--target-dir", target_dir] ++ profile_args(profile)
    Mix.shell().info("Compiling NIF crate #{@crate} (cargo #{Enum.join(args, " ")})")

    case System.cmd(cargo, args, cd: root, stderr_to_stdout: true, into: IO.stream()) do
      {_, 0} -> :ok
      {_, status} -> Mix.raise("cargo build failed (exit status #{status}); see the output above")
    end

    built = built_library(target_dir, if(profile == "release", do: "release", else: "debug"))
    File.mkdir_p!(dest)

    # Copy to a fresh file and rename, so a running VM that mapped the old library keeps it intact.
    tmp = lib <> ".tmp"
    File.cp!(built, tmp)
    File.rename!(tmp, lib)
  end

  defp profile_args("release"), do: ["--release"]
  defp profile_args("dev"), do: []

  defp profile_args(other) do
    Mix.raise("ELIXIR_SCOPE_CARGO_PROFILE must be \"release\" or \"dev\", got: #{inspect(other)}")
  end

  defp built_library(target_dir, profile) do
    candidates =
      for ext <- ["so", "dylib", "dll"],
          name <- ["lib#{@crate}.#{ext}", "#{@crate}.#{ext}"],
          do: Path.join([target_dir, profile, name])

    Enum.find(candidates, &File.exists?/1) ||
      Mix.raise("cargo succeeded but no library was found among: #{Enum.join(candidates, ", ")}")
  end

  @doc false
  # cargo from the PATH, else rustup's default location under $HOME.
  def find_cargo do
    home = System.get_env("HOME") || System.user_home() || "/"

    System.find_executable("cargo") ||
      Enum.find([Path.join(home, ".cargo/bin/cargo")], &File.exists?/1)
  end

  defp cargo! do
    find_cargo() ||
      Mix.raise("""
      ElixirScope needs Rust's cargo to build its native library, and none was found.
      Install Rust with rustup (https://rustup.rs), make sure `cargo` is on your PATH,
      then run `mix compile` again.
      """)
  end

  defp reload_native do
    mod = ElixirScope.Native

    if :code.is_loaded(mod) do
      :code.purge(mod)
      :code.delete(mod)
      :code.purge(mod)
    end

    :ok
  end
end
