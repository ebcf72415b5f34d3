"""`unmix serve` in a real browser: headless Chromium (Debian's) driven by Selenium.

Choose the bundled example in the page, watch its progress reach 100%, play, solo a stem,
download the zip. Skipped, with the reason, only where Chromium or its driver is absent.
Screenshots go to the test's folder, or to $UNMIX_WEB_SCREENSHOTS (docs/images/ took its
pictures from such a run).
"""
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from web_helpers import start_app

from unmix.separation.demo import EXAMPLE_PATH

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                                else None)
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'unmix[test]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    # the driver's path is given: Selenium Manager never tries to download one
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("UNMIX_CACHE", str(tmp_path / "cache"))  # nothing cached: the bundled model is the default
    app = start_app(tmp_path / "data", token="browser-test-token")
    yield app
    app.stop()


def screenshots(tmp_path):
    folder = Path(os.environ.get("UNMIX_WEB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_separate_the_example_play_solo_and_download_in_a_browser(app, browser, tmp_path):
    shots = screenshots(tmp_path)
    wait = WebDriverWait(browser, 90, poll_frequency=0.05)
    browser.get(app.link)  # the token link: its cookie carries the token from then on
    wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
    assert "token" not in browser.current_url
    assert browser.find_element(By.ID, "model").get_attribute("value") == "bundled"

    # a file that is not audio, dropped on the zone: refused with its reason, nothing queued
    browser.execute_script("""
        const data = new DataTransfer();
        data.items.add(new File(["just some words"], "lyrics.txt", {type: "text/plain"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    """)
    refused = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "li.job.failed"))
    assert "lyrics.txt: not an audio file" in refused.text

    browser.find_element(By.ID, "files").send_keys(str(EXAMPLE_PATH))  # the file picker
    item = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "li.job[data-id]"))
    seen = set()
    shot_taken = False
    while True:
        # one look at the item: its state, its bar and whether it offers the mixer
        job_state, percent, mixer_offered, text = browser.execute_script("""
            const li = arguments[0];
            return [li.dataset.state, Number(li.querySelector('.bar').getAttribute('aria-valuenow')),
                    !li.querySelector('.open').hidden, li.innerText];""", item)
        assert job_state != "failed", text
        assert mixer_offered == (job_state == "done")
        seen.add(percent)
        if job_state == "done":
            break
        if not shot_taken and 20 <= percent < 100:
            browser.save_screenshot(str(shots / "web-queue.png"))
            shot_taken = True
        time.sleep(0.05)
    assert percent == 100 and "100%" in text
    assert any(0 < p < 100 for p in seen), seen  # the bar moved: live updates, no reload

    # the mixer opens on the finished song
    play = wait.until(lambda d: d.find_element(By.ID, "play") if d.find_element(By.ID, "play").is_enabled() else None)
    rows = browser.find_elements(By.CSS_SELECTOR, ".stem")
    assert [r.get_attribute("data-target") for r in rows] == ["vocals", "drums", "bass", "other"]
    play.click()
    wait.until(lambda d: float(d.find_element(By.ID, "time").get_attribute("data-position")) > 0.3)
    assert play.text == "Pause"
    browser.find_element(By.CSS_SELECTOR, ".stem[data-target=vocals] .solo").click()
    silent = [r.get_attribute("data-target") for r in browser.find_elements(By.CSS_SELECTOR, ".stem.silent")]
    assert silent == ["drums", "bass", "other"]
    gains = browser.execute_script("return state.mixer.stems.map(s => [s.target, s.audible])")
    assert gains == [["vocals", True], ["drums", False], ["bass", False], ["other", False]]
    wait.until(lambda d: d.execute_script("const i = document.getElementById('spectrogram');"
                                          "return i.complete && i.naturalWidth > 0"))
    browser.set_window_size(1280, 1180)
    browser.execute_script("document.getElementById('mixer').scrollIntoView({block: 'start'})")
    browser.save_screenshot(str(shots / "web-mixer.png"))
    play.click()
    assert play.text == "Play"

    browser.find_element(By.ID, "zip").click()
    archive = browser.downloads / "example - stems.zip"
    wait.until(lambda d: archive.exists())
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == [f"example/{t}.wav" for t in ("bass", "drums", "other", "vocals")]
        assert all(info.file_size > 1_000_000 for info in z.infolist())  # 10 s of float stereo each
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("415" in message for message in errors), errors  # only the refused upload's answer
