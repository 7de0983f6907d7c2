defmodule ElixirScope.PackageTest do
  # What the Hex package holds (mix.exs's `package: [files: ...]`) builds the native library on
  # its own, and holds nothing a build does not need.
  use ExUnit.Case, async: false

  import ElixirScope.ScopeCase, only: [temp_path: 1]

  @root Path.expand("../..", __DIR__)

  defp package_files, do: Mix.Project.config()[:package][:files]

  test "the package's files are there, with licenses and links, and nothing built or local" do
    package = Mix.Project.config()[:package]
    assert package[:licenses] == ["Apache-2.0"] and map_size(package[:links]) > 0

    for f <- package_files() do
      assert File.exists?(Path.join(@root, f)), "#{f} is listed but missing"

      refute Enum.any?(
               ~w(target _build deps priv/native test bench examples assets/node_modules),
               &String.starts_with?(f, &1)
             ),
             "#{f} is not for the package"
    end

    # The web UI's built page ships (a user has no npm); its sources too, to rebuild it.
    assert "priv/static" in package_files()
    assert "assets/src" in package_files()
  end

  @tag timeout: 300_000
  test "a copy of the package alone builds the native library" do
    copy = temp_path("elixir_scope_package")

    for f <- package_files() do
      File.mkdir_p!(Path.dirname(Path.join(copy, f)))
      File.cp_r!(Path.join(@root, f), Path.join(copy, f))
    end

    cargo = Mix.Tasks.Compile.ElixirScopeNative.find_cargo()
    # The project's target directory: dependencies compiled once are not compiled again.
    env = [{"CARGO_TARGET_DIR", Path.join(@root, "target")}]

    {out, status} =
      System.cmd(cargo, ~w(build --offline --release -p elixir_scope_nif),
        cd: copy,
        env: env,
        stderr_to_stdout: true
      )

    assert status == 0, out

    # Only the core and the NIF crate: no benchmarks or tests came along.
    crates = copy |> Path.join("native") |> File.ls!() |> Enum.sort()
    assert crates == ["elixir_scope_core", "elixir_scope_nif"]
    refute File.exists?(Path.join(copy, "native/elixir_scope_core/tests"))
  end
end
