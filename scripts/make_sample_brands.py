"""Draw the sample brand kits' files (logos, packshots, a screenshot) procedurally, so the repo
ships real-looking brand assets without any third-party artwork:

    sparklio_assets/data/demo_kit/   the demo eye cream: alpha PNG bottle, alpha PNG logo
    tests/data/brands/shoe/          a running shoe photographed on white (JPEG), PNG logo
    tests/data/brands/bank/          a Korean bank app screenshot (PNG), SVG logo

Run once: `.venv/bin/python scripts/make_sample_brands.py`. The outputs are committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sparklio_assets.typography import font

ROOT = Path(__file__).resolve().parents[1]


def _shaded_cylinder(w: int, h: int, base: tuple[int, int, int], radius: int) -> Image.Image:
    x = np.linspace(0, 1, w, dtype=np.float32)
    light = 0.86 + 0.22 * np.exp(-((x - 0.3) ** 2) / 0.02) - 0.3 * x ** 3 + 0.1 * np.exp(-((x - 0.86) ** 2) / 0.002)
    row = np.clip(np.array(base, np.float32)[None, :] * light[:, None], 0, 255).astype(np.uint8)
    body = Image.fromarray(np.repeat(row[None], h, axis=0)).convert("RGBA")
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), radius=radius, fill=255)
    body.putalpha(mask)
    return body


def demo_kit() -> None:
    out = ROOT / "sparklio_assets" / "data" / "demo_kit"
    out.mkdir(parents=True, exist_ok=True)
    s = 2
    w, h = 560 * s, 1100 * s
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    cap = _shaded_cylinder(230 * s, 250 * s, (124, 77, 58), 26 * s)
    neck = _shaded_cylinder(120 * s, 70 * s, (200, 170, 150), 8 * s)
    body = _shaded_cylinder(420 * s, 740 * s, (236, 226, 216), 90 * s)
    img.alpha_composite(body, ((w - body.width) // 2, 330 * s))
    img.alpha_composite(neck, ((w - neck.width) // 2, 270 * s))
    img.alpha_composite(cap, ((w - cap.width) // 2, 40 * s))
    d = ImageDraw.Draw(img)
    cx = w // 2
    d.rectangle((cx - 210 * s, 640 * s, cx + 210 * s, 648 * s), fill=(124, 77, 58, 255))
    for text, size, y, colour in (("DAILY", 54, 700, (70, 44, 32)), ("EYE CARE", 54, 760, (70, 44, 32)),
                                  ("Moisturizer", 34, 850, (124, 77, 58)), ("30 ml · 1.0 fl oz", 22, 960, (124, 77, 58))):
        f = font(size * s, "extrabold" if size > 40 else "bold")
        d.text((cx - f.getlength(text) / 2, y * s), text, font=f, fill=(*colour, 255))
    eye = [(cx - 60 * s, 560 * s), (cx, 520 * s), (cx + 60 * s, 560 * s), (cx, 600 * s)]
    d.line(eye[:3], fill=(124, 77, 58, 255), width=6 * s, joint="curve")
    d.ellipse((cx - 16 * s, 544 * s, cx + 16 * s, 576 * s), fill=(124, 77, 58, 255))
    img = img.resize((w // s, h // s), Image.LANCZOS)
    img.save(out / "product.png", optimize=True)

    logo = Image.new("RGBA", (1400, 300), (0, 0, 0, 0))
    d = ImageDraw.Draw(logo)
    d.ellipse((10, 20, 270, 280), fill=(124, 77, 58, 255))
    d.arc((60, 95, 220, 235), 200, 340, fill=(242, 237, 232, 255), width=16)
    d.arc((60, 65, 220, 205), 20, 160, fill=(242, 237, 232, 255), width=16)
    d.ellipse((118, 128, 162, 172), fill=(242, 237, 232, 255))
    f = font(120, "extrabold")
    d.text((310, 60), "Daily Eye Care", font=f, fill=(124, 77, 58, 255))
    logo.crop(logo.getchannel("A").getbbox()).save(out / "logo.png", optimize=True)
    kit = {"brand_id": "2f0c6a2e-3c55-4d7e-9a57-2d1f3b8c9e10", "name": "Daily Eye Care",
           "colors": ["#7C4D3A", "#F2EDE8", "#C9A48B"], "tone_keywords": ["warm", "clinical", "trustworthy"],
           "logo_text": "DAILY EYE CARE", "cta_default": "지금 무료 샘플 신청", "logo": "logo.png",
           "product_images": ["product.png"], "legal_text": "개인차가 있을 수 있습니다. 30 ml 용량 기준.",
           "website": "dailyeyecare.kr"}
    (out / "brand.json").write_text(json.dumps(kit, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def shoe_kit() -> None:
    out = ROOT / "tests" / "data" / "brands" / "shoe"
    out.mkdir(parents=True, exist_ok=True)
    s = 2
    w, h = 1000 * s, 640 * s
    photo = Image.new("RGB", (w, h), (255, 255, 255))
    shadow = Image.new("L", (w, h), 0)
    ImageDraw.Draw(shadow).ellipse((150 * s, 500 * s, 880 * s, 560 * s), fill=90)
    shadow = shadow.filter(ImageFilter.GaussianBlur(18 * s))
    photo.paste((200, 200, 200), (0, 0), shadow)
    d = ImageDraw.Draw(photo)
    P = lambda pts: [(x * s, y * s) for x, y in pts]
    d.polygon(P([(120, 470), (890, 470), (905, 520), (130, 525)]), fill=(30, 30, 30))  # outsole
    d.polygon(P([(115, 400), (880, 420), (895, 475), (118, 478)]), fill=(245, 245, 245))  # midsole
    d.line(P([(130, 440), (880, 448)]), fill=(215, 215, 215), width=5 * s)
    upper = P([(120, 405), (150, 300), (260, 250), (390, 190), (470, 130), (560, 120), (600, 180),
               (700, 250), (830, 310), (885, 370), (880, 420)])
    d.polygon(upper, fill=(255, 90, 31))
    d.polygon(P([(560, 120), (600, 180), (640, 210), (610, 110)]), fill=(225, 70, 20))  # heel counter
    d.polygon(P([(200, 400), (430, 300), (720, 330), (860, 400)]), fill=(26, 26, 26))  # stripe
    for k in range(5):
        x = 300 + k * 45
        d.line(P([(x, 255 - k * 22), (x + 60, 270 - k * 22)]), fill=(245, 245, 245), width=9 * s)
    d.polygon(P([(120, 405), (150, 300), (200, 280), (180, 405)]), fill=(235, 80, 25))  # toe cap
    arr = np.asarray(photo).astype(np.float32)
    arr += np.random.default_rng(3).normal(0, 2.0, arr.shape)  # sensor noise, like a photo
    photo = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize((w // s, h // s), Image.LANCZOS)
    photo.save(out / "shoe.jpg", quality=88)
    logo = Image.new("RGBA", (1000, 260), (0, 0, 0, 0))
    d = ImageDraw.Draw(logo)
    d.polygon([(10, 230), (120, 30), (200, 30), (90, 230)], fill=(255, 90, 31, 255))
    d.polygon([(110, 230), (220, 30), (300, 30), (190, 230)], fill=(26, 26, 26, 255))
    d.text((330, 40), "STRIDE", font=font(180, "extrabold"), fill=(26, 26, 26, 255))
    logo.crop(logo.getchannel("A").getbbox()).save(out / "logo.png", optimize=True)
    kit = {"brand_id": "stride-running", "name": "Stride", "colors": ["#FF5A1F", "#1A1A1A", "#F5F5F5"],
           "tone_keywords": ["energetic", "bold"], "logo_text": "STRIDE", "cta_default": "Shop the Stride Volt",
           "logo": "logo.png", "product_images": ["shoe.jpg"], "website": "stride.run",
           "legal_text": "Free returns within 30 days. Terms apply."}
    (out / "brand.json").write_text(json.dumps(kit, indent=2) + "\n", encoding="utf-8")
    brief = {"brand_id": "stride-running", "product": "Stride Volt Running Shoe",
             "target_audience": "weekend runners training for their first half marathon",
             "goal": "drive online sales", "duration": 30, "tone": "energetic_bold",
             "channels": ["instagram_reels", "instagram_feed", "facebook_feed", "youtube"]}
    (out / "brief.json").write_text(json.dumps(brief, indent=2) + "\n", encoding="utf-8")


def bank_kit() -> None:
    out = ROOT / "tests" / "data" / "brands" / "bank"
    out.mkdir(parents=True, exist_ok=True)
    w, h = 720, 1480
    img = Image.new("RGB", (w, h), (244, 246, 250))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, w, 330), fill=(0, 82, 204))
    d.text((40, 20), "9:41", font=font(28, "bold"), fill=(255, 255, 255))
    d.text((40, 90), "한빛뱅크", font=font(44, "extrabold"), fill=(255, 255, 255))
    d.text((40, 170), "내 통장 잔액", font=font(28, "regular"), fill=(210, 225, 255))
    d.text((40, 210), "2,450,000원", font=font(64, "extrabold"), fill=(255, 255, 255))
    d.rounded_rectangle((30, 370, w - 30, 560), radius=28, fill=(255, 255, 255))
    for k, (label, colour) in enumerate((("송금", (0, 82, 204)), ("충전", (0, 194, 168)), ("적금", (255, 170, 0)))):
        cx = 130 + k * 230
        d.ellipse((cx - 50, 400, cx + 50, 500), fill=colour)
        d.text((cx - font(28, "bold").getlength(label) / 2, 510), label, font=font(28, "bold"), fill=(40, 40, 50))
    d.text((40, 610), "최근 거래", font=font(34, "extrabold"), fill=(30, 30, 40))
    rows = (("스타벅스 강남점", "-5,600원"), ("월급", "+3,200,000원"), ("택시", "-12,400원"), ("적금 이체", "-300,000원"),
            ("편의점", "-3,800원"))
    for k, (name, amount) in enumerate(rows):
        y = 680 + k * 130
        d.rounded_rectangle((30, y, w - 30, y + 110), radius=22, fill=(255, 255, 255))
        d.ellipse((60, y + 25, 120, y + 85), fill=(226, 234, 248))
        d.text((145, y + 35), name, font=font(30, "bold"), fill=(30, 30, 40))
        colour = (0, 150, 120) if amount.startswith("+") else (30, 30, 40)
        f = font(30, "extrabold")
        d.text((w - 60 - f.getlength(amount), y + 35), amount, font=f, fill=colour)
    d.rectangle((0, h - 120, w, h), fill=(255, 255, 255))
    for k in range(4):
        d.rounded_rectangle((80 + k * 160, h - 90, 140 + k * 160, h - 40), radius=12, fill=(200, 208, 222))
    img.save(out / "app.png", optimize=True)
    svg = """<svg xmlns="http://www.w3.org/2000/svg" width="520" height="140" viewBox="0 0 520 140">
  <script>alert('no')</script>
  <rect x="0" y="10" width="120" height="120" rx="30" fill="#0052CC"/>
  <path d="M30 90 L60 40 L90 90 Z" fill="#FFFFFF"/>
  <circle cx="60" cy="98" r="9" fill="#00C2A8"/>
  <text x="140" y="98" font-size="72" font-weight="800" fill="#0B1F44" font-family="NanumGothic">한빛뱅크</text>
</svg>
"""
    (out / "logo.svg").write_text(svg, encoding="utf-8")
    kit = {"brand_id": "hanbit-bank", "name": "한빛뱅크", "colors": ["#0052CC", "#00C2A8", "#F4F6FA"],
           "tone_keywords": ["trustworthy", "simple"], "logo_text": "한빛뱅크",
           "cta_default": "지금 한빛뱅크 앱에서 3분 만에 비대면 계좌를 개설하세요",
           "logo": "logo.svg", "product_images": [{"path": "app.png", "kind": "screen"}],
           "website": "hanbitbank.co.kr",
           "legal_text": "예금자보호법에 따라 1인당 최고 5천만원까지 보호됩니다. 금리는 시장 상황에 따라 변동될 수 있습니다."}
    (out / "brand.json").write_text(json.dumps(kit, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    brief = {"brand_id": "hanbit-bank", "product": "한빛뱅크 모바일 앱",
             "target_audience": "은행 지점 방문이 번거로운 20-40대 직장인과 자영업자",
             "goal": "앱 다운로드와 비대면 계좌 개설 전환", "duration": 60, "tone": "trustworthy_simple",
             "channels": ["instagram_reels", "youtube_shorts", "instagram_feed", "youtube"]}
    (out / "brief.json").write_text(json.dumps(brief, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    demo_kit()
    shoe_kit()
    bank_kit()
