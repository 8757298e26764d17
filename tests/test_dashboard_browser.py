"""`stockcast dashboard` after a real run, driven by headless Chromium (Debian's `chromium` and
`chromium-driver`, through Selenium): every page renders its charts and tables on real data.

The run: real price files (the last bars of three tickers), `stockcast run` with a tiny LSTM
(forced past the gate, so that a champion exists), a walk-forward backtest of the baselines
and the marts rebuilt. Screenshots go to a temporary folder; with
STOCKCAST_UPDATE_SCREENSHOTS=1 to docs/images/dashboard-*.png (the README's). Without a
browser the test is skipped, or fails when STOCKCAST_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, YAHOO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not YAHOO.is_dir(), reason="../shared/data is not beside the repo"),
]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TICKERS = ["AAPL", "KO", "MSFT"]
BARS_PER_TICKER = 900  # the last ~3.5 years: enough for the tiny model, the gate and a backtest
LATER_BARS = 25  # loaded after the champion was fitted: its forecasts on them are out-of-sample
TINY = ["--epochs", "1", "--units", "4", "--window", "10", "--max-train-samples", "2000"]
PAGE_WAIT_SECONDS = 90
BUSY = "The warehouse is being updated by a flow"


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return ", ".join(missing) or None


@pytest.fixture(scope="module")
def browser_ready():
    missing = _browser_missing()
    if missing:
        message = (
            f"no browser for the dashboard test ({missing} missing): "
            "apt-get install chromium chromium-driver"
        )
        if os.environ.get("STOCKCAST_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _stockcast() -> str:
    return str(Path(sys.executable).with_name("stockcast"))


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOCKCAST_", "MLFLOW_", "PREFECT_"))
    }
    return {**env, "STOCKCAST_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _stockcast_ok(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [_stockcast(), *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, browser_ready):
    """A champion fitted on all but the last LATER_BARS bars, those bars loaded after it, a
    baseline backtest, and a backfill (`score --since`) across the champion's last data day:
    in-sample forecasts before it, out-of-sample realized ones after it."""
    home = tmp_path_factory.mktemp("home")
    early = tmp_path_factory.mktemp("early")
    full = tmp_path_factory.mktemp("full")
    for ticker in TICKERS:
        # The file's last bars, as the vendor wrote them (Yahoo's null bar included).
        frame = pd.read_csv(YAHOO / f"{ticker}.csv.gz", dtype=str, keep_default_na=False)
        frame = frame.tail(BARS_PER_TICKER)
        frame.head(BARS_PER_TICKER - LATER_BARS).to_csv(early / f"{ticker}.csv", index=False)
        frame.to_csv(full / f"{ticker}.csv", index=False)
    env = _env(home)
    timings = {}
    started = time.perf_counter()
    _stockcast_ok(["run", str(early), *TINY, "--force"], env)
    timings["run"] = time.perf_counter() - started
    started = time.perf_counter()
    _stockcast_ok(["ingest", str(full)], env)
    _stockcast_ok(
        ["backtest", "--model", "naive", "--model", "ewma", "--folds", "2", "--test-days", "10"],
        env,
    )
    _stockcast_ok(["transform"], env)
    timings["later bars and backtest"] = time.perf_counter() - started
    started = time.perf_counter()
    since = _bar_date(full, BARS_PER_TICKER - 2 * LATER_BARS)
    backfill = _stockcast_ok(["score", "--since", since], env)
    _stockcast_ok(["transform", "--select", "source:ml.predicted_prices+"], env)
    timings["backfill"] = time.perf_counter() - started
    print(f"\nreal run for the dashboard: {timings}")
    return {"home": home, "env": env, "since": since, "backfill": backfill}


def _bar_date(folder: Path, position: int) -> str:
    """The date of the bar at ``position`` (0-based) in the first price file of ``folder``."""
    frame = pd.read_csv(folder / f"{TICKERS[0]}.csv", na_values="null").dropna()
    return str(frame["Date"].iloc[position])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(real_run):
    port = _free_port()
    process = subprocess.Popen(
        [_stockcast(), "dashboard", "--port", str(port)],
        env={**real_run["env"], "STOCKCAST_DASHBOARD_TTL_SECONDS": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the dashboard did not answer in 120 s"
        time.sleep(0.5)
    yield {"url": url, "port": port, "process": process}
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1700"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_WAIT_SECONDS)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    if os.environ.get("STOCKCAST_UPDATE_SCREENSHOTS") == "1":
        folder = REPO / "docs" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")


def _wait(driver, condition, what: str, seconds: float = PAGE_WAIT_SECONDS):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.5).until(
        lambda d: condition(d), message=f"waited {seconds} s for {what}"
    )


def _script_done(driver) -> bool:
    """Streamlit has finished the page's script (no element marked stale, nothing running)."""
    return driver.execute_script(
        "return !document.querySelector('[data-testid=\"stStatusWidget\"]') && "
        "document.querySelectorAll('[data-stale=\"true\"]').length === 0"
    )


PLOTS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => ({
    traces: (g.data || []).map(t => [t.type || 'scatter', t.name || '']),
    candles: g.querySelectorAll('.boxlayer .trace path').length,
    fills: g.querySelectorAll('.scatterlayer .js-fill').length,
    lines: g.querySelectorAll('.scatterlayer .js-line').length,
    bars: g.querySelectorAll('.barlayer .point').length,
    svg: g.querySelectorAll('.main-svg').length,
}));
"""


def _plots(driver) -> list[dict]:
    return driver.execute_script(PLOTS)


def _errors(driver) -> list[str]:
    return [
        e.text
        for e in driver.find_elements("css selector", '[data-testid="stException"], .stException')
    ]


def _nav(driver, label: str) -> None:
    links = driver.find_elements("css selector", '[data-testid="stSidebarNavLink"]')
    (link,) = [a for a in links if a.text.strip() == label]
    link.click()


def _ticker_plot(driver, ticker: str) -> dict | None:
    for plot in _plots(driver):
        names = [name for _, name in plot["traces"]]
        if ["candlestick", ticker] in plot["traces"] and "80% interval" in names:
            return plot
    return None


ROW_HEIGHT = 35  # Streamlit's data grid: the header and each row


def test_overview_lists_every_ticker_and_opens_the_ticker_page(browser, server, screenshots):
    from selenium.webdriver.common.action_chains import ActionChains

    driver = browser
    driver.get(server["url"])
    _wait(driver, lambda d: d.find_elements("css selector", '[data-testid="stDataFrame"]'),
          "the overview table")  # fmt: skip
    _wait(driver, lambda d: "3 of 3 tickers" in d.find_element("tag name", "body").text,
          "the ticker count")  # fmt: skip
    _wait(driver, _script_done, "the overview to finish")
    assert not _errors(driver)
    table = driver.find_element("css selector", '[data-testid="stDataFrame"]')
    assert table.size["height"] >= 4 * ROW_HEIGHT  # the header and a row per ticker
    text = driver.find_element("tag name", "body").text
    assert "Overview" in text and "Select a row" in text
    driver.save_screenshot(str(screenshots / "dashboard-overview.png"))
    # The grid is drawn on a canvas: click the selection box of its second row (KO).
    width, height = table.size["width"], table.size["height"]
    ActionChains(driver).move_to_element_with_offset(
        table, -width // 2 + 16, -height // 2 + 2 * ROW_HEIGHT + ROW_HEIGHT // 2
    ).click().perform()
    _wait(driver, lambda d: _ticker_plot(d, "KO"), "KO's ticker page after the click")
    assert "/ticker?ticker=KO" in driver.current_url


def test_ticker_page_draws_candles_forecast_band_and_indicators(browser, server, screenshots):
    driver = browser
    driver.get(server["url"] + "/ticker?ticker=KO")
    plot = _wait(driver, lambda d: _ticker_plot(d, "KO"), "KO's chart with the forecast band")
    _wait(driver, _script_done, "the ticker page to finish")
    plot = _ticker_plot(driver, "KO")
    names = [name for _, name in plot["traces"]]
    assert {"95% interval", "RSI 14", "MACD", "signal", "MACD histogram"} <= set(names)
    assert any(name.startswith("forecast (v") for name in names), names
    assert any(name.startswith("backtest ") for name in names), names
    # The backfill: forecasts for past dates, in-sample ones apart.
    assert {"published forecasts, 1 d ahead", "backfilled in-sample, 1 d ahead"} <= set(names)
    # Drawn, not only sent: candles, the two bands' fills, lines and the volume/MACD bars.
    assert plot["candles"] >= 1 and plot["fills"] >= 2 and plot["lines"] >= 5, plot
    assert plot["bars"] > 100 and plot["svg"] >= 1, plot
    body = driver.find_element("tag name", "body").text
    assert "Latest forecast" in body and "As of" in body
    assert not _errors(driver)
    driver.save_screenshot(str(screenshots / "dashboard-ticker.png"))


def test_switching_ticker_redraws_the_chart(browser, server):
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(server["url"] + "/ticker?ticker=KO")
    _wait(driver, lambda d: _ticker_plot(d, "KO"), "KO's chart")
    _wait(driver, _script_done, "the ticker page to finish")
    box = driver.find_element(
        "css selector", '[data-testid="stSidebar"] [data-testid="stSelectbox"] input'
    )
    box.click()
    box.send_keys("MSFT")
    box.send_keys(Keys.ENTER)
    _wait(driver, lambda d: _ticker_plot(d, "MSFT"), "MSFT's chart after switching")
    assert "ticker=MSFT" in driver.current_url
    assert not _errors(driver)


def test_model_page_shows_champion_skill_and_coverage(browser, server, screenshots):
    driver = browser
    driver.get(server["url"])
    _wait(driver, lambda d: d.find_elements("css selector", '[data-testid="stSidebarNavLink"]'),
          "the page links")  # fmt: skip
    _nav(driver, "Model")
    _wait(driver, lambda d: len(_plots(d)) >= 3, "the skill, coverage and accuracy charts")
    _wait(driver, _script_done, "the model page to finish")
    body = driver.find_element("tag name", "body").text
    assert "stockcast-lstm v1" in body and "bootstrap (forced past the gate)" in body
    assert "open in the MLflow UI" in body
    assert "Diebold-Mariano p-values" in body
    plots = _plots(driver)
    skill = [p for p in plots if ["scatter", "ewma"] in p["traces"]]
    coverage = [p for p in plots if ["scatter", "ewma 80%"] in p["traces"]]
    assert skill and coverage, plots
    assert skill[0]["lines"] >= 1 and coverage[0]["lines"] >= 2
    # Realized accuracy of the out-of-sample forecasts that came due.
    assert [p for p in plots if ["scatter", "stockcast-lstm v1"] in p["traces"]], plots
    assert not _errors(driver)
    # Tall enough for every section in one picture.
    driver.set_window_size(1400, 2700)
    _wait(driver, _script_done, "the model page after the resize")
    time.sleep(1)  # Plotly redraws on resize
    driver.save_screenshot(str(screenshots / "dashboard-model.png"))
    driver.set_window_size(1400, 1700)


def test_dashboard_refuses_a_port_in_use(server, real_run):
    done = subprocess.run(
        [_stockcast(), "dashboard", "--port", str(server["port"])],
        env=real_run["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"error: port {server['port']} on 127.0.0.1 is not free")
    assert "--port" in done.stderr


def test_the_dashboard_reads_while_a_flow_writes(server, real_run, browser):
    """A writer holding the DuckDB file: the ticker page read before is drawn from what was
    read, with the updating notice (the server's cache expires at once here, so every answer
    is asked of the warehouse again); a page never read says it is updating. No traceback, no
    wait for the lock; once the writer is gone the page reads again."""
    from helpers import duckdb_lock_held

    path = real_run["home"] / "warehouse" / "stockcast.duckdb"
    driver = browser

    def body() -> str:
        return driver.find_element("tag name", "body").text

    with duckdb_lock_held(path):
        driver.get(server["url"] + "/ticker?ticker=KO")
        _wait(driver, lambda d: _ticker_plot(d, "KO") and BUSY in body(),
              "KO's chart from the last read, with the updating notice")  # fmt: skip
        _wait(driver, _script_done, "the page to finish")
        assert not _errors(driver)
        driver.get(server["url"] + "/ticker?ticker=AAPL")
        _wait(driver, lambda d: "updating" in body() and _script_done(d), "the notice")
        assert not _ticker_plot(driver, "AAPL") and not _errors(driver)
    driver.refresh()
    _wait(driver, lambda d: _ticker_plot(d, "AAPL"), "the AAPL chart once the writer is gone")
    _wait(driver, _script_done, "the page to finish")
    assert BUSY not in body()


def test_backfill_flags_in_sample_forecasts_and_keeps_them_out_of_accuracy(real_run):
    """`score --since` forecasts as of every bar from that date; those whose target date the
    champion was fitted on are in-sample, and the accuracy marts count only the others."""
    import duckdb

    assert "backfilling" in real_run["backfill"]
    path = real_run["home"] / "warehouse" / "stockcast.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        forecasts = con.execute(
            "select ticker, as_of_date, horizon, target_date, model_data_end, is_in_sample, "
            "is_actual_known from marts.fct_forecasts_vs_actuals"
        ).df()
        bars = con.execute(
            "select ticker, trade_date from marts.fct_daily_indicators where trade_date >= ?",
            [real_run["since"]],
        ).df()
        by_horizon = con.execute(
            "select horizon, n_forecasts from marts.fct_forecast_accuracy_by_horizon "
            "where ticker = '__all__' order by horizon"
        ).df()
    data_end = forecasts["model_data_end"].dropna().unique()
    assert len(data_end) == 1  # one champion
    # Every bar since --since has its ten forecasts (the run's own as-of date included).
    as_of = forecasts[forecasts["as_of_date"] >= pd.Timestamp(real_run["since"])]
    assert set(zip(as_of["ticker"], as_of["as_of_date"], strict=True)) == set(
        zip(bars["ticker"], bars["trade_date"], strict=True)
    )
    assert (as_of.groupby(["ticker", "as_of_date"]).size() == 10).all()
    expected = forecasts["target_date"] <= pd.Timestamp(data_end[0])
    assert (forecasts["is_in_sample"] == expected).all()
    assert forecasts["is_in_sample"].any() and (~forecasts["is_in_sample"]).any()
    realized = forecasts[forecasts["is_actual_known"] & ~forecasts["is_in_sample"]]
    assert len(realized) > 0
    counted = realized.groupby("horizon").size()
    assert by_horizon.set_index("horizon")["n_forecasts"].to_dict() == counted.to_dict()
