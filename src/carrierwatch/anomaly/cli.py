"""``carrierwatch anomaly`` commands (the lead wires the group into the main CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from carrierwatch.anomaly.base import available_detectors
from carrierwatch.anomaly.detectors import DEFAULT_DETECTOR
from carrierwatch.anomaly.nab import load_corpus, run_nab
from carrierwatch.anomaly.scoring import DEFAULT_PROFILES, load_profiles

__all__ = ["anomaly"]


@click.group(name="anomaly")
def anomaly() -> None:
    """Online anomaly detectors and their NAB benchmark."""


@anomaly.command(name="detectors")
def list_detectors() -> None:
    """List the registered detectors."""
    for name in available_detectors():
        click.echo(name + ("  (default)" if name == DEFAULT_DETECTOR else ""))


@anomaly.command(name="nab")
@click.option("--data", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="NAB data directory (category/file.csv).")
@click.option("--windows", "windows_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="NAB combined_windows.json.")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for NAB result files and the score summary.")
@click.option("--detector", default=DEFAULT_DETECTOR, show_default=True,
              help="Registered detector name.")
@click.option("--profiles", "profiles_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="NAB profiles.json (default: standard, reward_low_FP_rate, reward_low_FN_rate).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the full summary as JSON.")
def nab(data_dir: Path, windows_file: Path, out_dir: Path, detector: str,
        profiles_file: Path | None, seed: int, as_json: bool) -> None:
    """Run DETECTOR online over NAB series, write result files and print NAB scores.

    Exit 0; 1 when the corpus, windows or profiles cannot be read (a series named in the windows
    file missing under DATA, a file that is not CSV/JSON text) or OUT cannot be written; 2 for
    an unknown detector or a missing path.
    """
    # a CarrierwatchError (bad corpus or profiles: exit 1; unknown detector: exit 2) becomes one
    # `carrierwatch: error:` line in carrierwatch.cli.main
    profiles = load_profiles(profiles_file) if profiles_file else DEFAULT_PROFILES
    corpus = load_corpus(data_dir, windows_file)
    report = run_nab(corpus, detector, profiles=profiles, out_dir=out_dir, seed=seed)
    if as_json:
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
        return
    click.echo(f"detector {report.detector}: {len(corpus)} series, {report.points} points")
    for name, score in report.profiles.items():
        click.echo(f"  {name:<20} score {score.normalized:6.1f}  threshold {score.threshold:.6f}"
                   f"  raw {score.raw:.3f} (null {score.null:.1f}, perfect {score.perfect:.1f})")
    click.echo(f"results in {out_dir / report.detector}")
