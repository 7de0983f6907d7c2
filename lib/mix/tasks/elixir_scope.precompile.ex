defmodule Mix.Tasks.ElixirScope.Precompile do
  @shortdoc "Builds this VM's precompiled NIF artifact and records its checksum"
  @moduledoc """
  Builds the native library from source and packs it as this VM's precompiled artifact (see
  `Mix.Tasks.Compile.ElixirScopeNative`): `<out>/elixir_scope_nif-v<version>-nif-<nif>-<target>.so.tar.gz`,
  and records its SHA-256 in the checksum file, beside those of other targets already there.
  Run it once per target (and NIF version) of a release, then publish the artifacts at the URL
  users give as `ELIXIR_SCOPE_PRECOMPILED_URL`.

      mix elixir_scope.precompile --out artifacts/

  ## Options

    * `--out DIR` - where the artifact goes (default `artifacts/`).
    * `--checksums FILE` - the checksum file (default: the package's
      `checksum-elixir_scope_nif.exs`).
  """
  use Mix.Task

  alias Mix.Tasks.Compile.ElixirScopeNative

  @impl true
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, strict: [out: :string, checksums: :string])
    out = opts[:out] || "artifacts"
    sums = opts[:checksums] || Path.expand("../../../checksum-elixir_scope_nif.exs", __DIR__)

    System.put_env("ELIXIR_SCOPE_BUILD", "true")
    Mix.Task.run("compile", [])
    # Built from source now, in release: never an older build or a downloaded library.
    System.put_env("ELIXIR_SCOPE_CARGO_PROFILE", "release")
    Mix.Task.rerun("compile.elixir_scope_native", ["--force"])
    so = Path.join([Mix.Project.app_path(), "priv", "native", "elixir_scope_nif.so"])

    name = ElixirScopeNative.artifact_name()
    File.mkdir_p!(out)
    artifact = Path.join(out, name)

    :ok =
      :erl_tar.create(String.to_charlist(artifact), [{~c"elixir_scope_nif.so", File.read!(so)}], [
        :compressed
      ])

    sha = :crypto.hash(:sha256, File.read!(artifact)) |> Base.encode16(case: :lower)

    known =
      if File.exists?(sums) do
        {map, _} = Code.eval_file(sums)
        map
      else
        %{}
      end

    File.write!(sums, """
    # SHA-256 of each precompiled NIF artifact of this version, by file name: written by
    # `mix elixir_scope.precompile` when the artifacts are built for a release.
    #{inspect(Map.put(known, name, sha), pretty: true, limit: :infinity)}
    """)

    Mix.shell().info("#{artifact} (sha256 #{sha})")
    {:ok, artifact, sha}
  end
end
