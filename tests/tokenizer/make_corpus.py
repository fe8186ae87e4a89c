#!/usr/bin/env python3
"""make_corpus.py — writes the tokenizer conformance corpus, deterministically.

    python3 tests/tokenizer/make_corpus.py          # rewrites the committed files
    python3 tests/tokenizer/make_corpus.py --check  # exits 1 when they are out of date

Outputs, beside this script:
  corpus.jsonl        {"text": ...} rows: real sentences in many scripts, emoji sequences,
                      combining marks, whitespace runs, digits, contractions, source code,
                      URLs, special-token look-alikes, empty and whitespace-only texts.
  surrogates.jsonl    {"text": ...} rows whose JSON holds lone UTF-16 surrogates (\\ud800):
                      valid JSON, but not valid Unicode text (see bench/TOKENIZER.md).
  invalid_utf8.jsonl  rows whose raw bytes are not valid UTF-8 (not valid JSON text either):
                      what `neuronlab tokenize` does with them is compared with the reference,
                      which decodes the file with the WHATWG UTF-8 decoder (U+FFFD per
                      maximal invalid subpart).

Only the standard library; no randomness except a fixed xorshift generator, so any python3
(3.6+) writes byte-identical files.
"""
import json
import os
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))


class XorShift:
    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFF or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n

    def pick(self, seq):
        return seq[self.below(len(seq))]


rng = XorShift(20240611)
T = []  # (category, text)


def add(cat, *texts):
    for t in texts:
        T.append((cat, t))


# --- English prose, contractions, mixed case -------------------------------------------
add("english",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you doing today?",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
    "I don't know what you're talking about, but they'll figure it out and we'd better help.",
    "I'M NOT SURE THAT'S RIGHT, BUT HE'LL SAY IT'S FINE AND THEY'VE ALREADY LEFT.",
    "She'S been there; We'Ll see; you'D think; It'S odd; THEY'RE here; I'Ve no idea.",
    "'s is a suffix, and so is 't; ''s and 'S and 'll at the start of a text.",
    "The dog's bowl, the dogs' bowls, James's book and the Joneses' house.",
    "Rock 'n' roll, y'all'd've come, o'clock, O'Neil and D'Angelo met at ma'am's place.",
    "Curly apostrophes: don’t, it’s, they’ll, we’ve — and “double quotes” too.",
    "HeLLo WoRLD, this Is MiXeD cAsE TeXt wItH iPhone, eBay, McDonald and macOS.",
    "camelCaseIdentifier PascalCaseName snake_case_name SCREAMING_SNAKE_CASE kebab-case-name",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a very long word, and so is antidisestablishmentarianism.",
    "Supercalifragilisticexpialidocious! Even though the sound of it is something quite atrocious.",
    "Wait... what?!?! No way!!! Really??? Yes!!!!!!!!!!",
    "Hmm.......... okay -- fine --- whatever ---- sure ~~~~ *** ### $$$ %%% ^^^ &&&",
    "She said, \"I'll be back at 5:30 p.m.\" and left; he replied: 'Sure thing.'",
    "Mr. and Mrs. Smith (née Jones) live at 221B Baker St., London NW1 6XE, U.K.",
    "We need 3.14159 cups of flour, 2/3 of a lemon and roughly 1,000,000 grains of salt.",
    "In 1969, Apollo 11 landed on the Moon; in 2024 the mission was 55 years old.",
    "e.g. i.e. etc. vs. a.m. p.m. U.S.A. Ph.D. R&D Q&A AT&T",
    "The year 2000 problem (Y2K) cost about $300 billion USD (≈ €270 bn) worldwide.",
    "Temperatures ranged from -40°C to +45°C (−40°F to 113°F) last year.",
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer",
    "Four score and seven years ago our fathers brought forth on this continent, a new nation.",
    "   leading spaces and trailing spaces   ",
    " a single leading space",
    "trailing space ",
    "Tabs\tbetween\twords\tand\t\ttwo\t\t\ttabs",
    "Line one\nLine two\n\nLine four after a blank line\n",
    "Windows line endings\r\nsecond line\r\n\r\nfourth line\r\n",
    "Old Mac line endings\rsecond line\rthird",
    "Mixed\r\n\n\r\r\n endings \n\r and spaces  \r\n  done",
    "word\u00a0with\u00a0no-break\u00a0spaces and a thin\u2009space and an em\u2003space",
    "Zero\u200bwidth\u200bspace, zero\u200cwidth\u200dnon-joiner and joiner, soft\u00adhyphen.",
    "Line\u2028separator and paragraph\u2029separator and next\u0085line.",
    "Vertical\x0btab and form\x0cfeed and unit\x1fseparator and escape\x1b[0m and bell\x07.",
    "DEL\x7fchar and C1 controls \x80\x81\x9f in text.",
    "I've got 99 problems but a tokenizer ain't one.",
    "you'RE, YOU'RE, You're, you're, YoU'rE",
    "don't DON'T Don't dOn'T don''t don' t don 't",
    "ISN'T WASN'T AREN'T WEREN'T HASN'T HAVEN'T HADN'T WON'T WOULDN'T",
    "'twas the night before Christmas, 'tis the season, 'em all.",
    "A sentence with a very long URL-less hyphenated-compound-word-that-goes-on-and-on-and-on-forever.",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abababababababababababababababababababababababababababababababababababab",
    "The Eiffel Tower is 330 metres tall; it was the world's tallest structure until 1930.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Please reply to this e-mail by Friday, 12 July 2024, at the latest.",
    "Q: What's 2+2? A: It's 4. Q: What's 0.1+0.2? A: 0.30000000000000004.",
)

# German, French, Spanish, Portuguese, Italian, Polish, Czech, Turkish, Nordic, etc.
add("latin",
    "Donaudampfschifffahrtsgesellschaftskapitänswitwe ist ein sehr langes deutsches Wort.",
    "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg. Straße, Maß, Fuß.",
    "Le cœur a ses raisons que la raison ne connaît point. Où est l'hôpital ? À bientôt !",
    "L'été dernier, j'ai visité Genève, Besançon et Aix-en-Provence avec ma sœur Zoë.",
    "¿Dónde está la biblioteca? ¡Qué día tan bonito! El niño comió piña y jalapeños.",
    "A ligeira raposa marrom ataca o cão preguiçoso. Ação, coração, não, pão, mãe.",
    "Nel mezzo del cammin di nostra vita mi ritrovai per una selva oscura.",
    "Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy. Čeština má háčky a čárky.",
    "Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul, ılık, IĞDIR, ışık.",
    "Høj hvede på Ærø og Ålborg; Smörgåsbord; Þórbergur Þórðarson; Æsir.",
    "Árvíztűrő tükörfúrógép. Őrült ügyvéd.",
    "Tiếng Việt có nhiều dấu: Người ta nói rằng đường đi khó không vì ngăn sông cách núi.",
    "Dấu chồng: ặ ẫ ộ ữ ỡ ệ ẩ ằ ớ ự ỷ ĩ ổ ễ.",
    "Lietuvių kalba: ąčęėįšųūž. Latviešu valoda: āčēģīķļņšūž.",
    "Română: Și în șase zile, țara își schimbă fața.",
    "Kiswahili: Habari za asubuhi? Nzuri sana, asante.",
    "Esperanto: Eĥoŝanĝo ĉiuĵaŭde. Ĉu vi parolas Esperanton?",
)

# Cyrillic, Greek, Armenian, Georgian
add("cyrillic",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Москва — столица России. В 2023 году население составляло около 13 миллионов человек.",
    "Широка страна моя родная, много в ней лесов, полей и рек!",
    "Я не знаю, что сказать. Ты придёшь завтра? Он сказал: «Конечно!»",
    "Україна: Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!",
    "Български: Жълтата дюля беше щастлива, че пухът, който цъфна, замръзна като гьон.",
    "Српски: Фијуче ветар у шибљу, леди пасаже и куће иза њих и гунђа у оџацима.",
    "ПРИВЕТ МИР, привет мир, ПрИвЕт МиР",
)
add("greek",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας. Πού είσαι; Τι κάνεις;",
    "ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν.",
    "Μαθηματικά: α + β = γ, Σ(x) = ∫ f(x) dx, π ≈ 3.14159, Ω, μ, λ.",
)
add("armenian_georgian",
    "Հայերեն: Բարեւ, ինչպե՞ս ես։",
    "ქართული: გამარჯობა, როგორ ხარ? ყველა ადამიანი იბადება თავისუფალი.",
)

# CJK
add("chinese",
    "我能吞下玻璃而不伤身体。",
    "今天天气很好，我们去公园散步吧！你觉得怎么样？",
    "中华人民共和国成立于1949年10月1日，首都是北京。",
    "人工智能正在改变世界，大型语言模型可以生成文本、翻译语言和回答问题。",
    "學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？",
    "繁體中文與簡體中文：電腦／电脑，軟體／软件，網絡／网络。",
    "他说：“这个问题很难。”她回答：‘没关系，我们一起解决。’",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "价格是￥1280元，折扣后只要８９９元！",
    "Python是一种编程语言，它的设计哲学强调代码的可读性。",
    "罕见字：𠀀𠀁𪚥𡃁 (CJK Extension B) 和 龘 龖 䲜。",
)
add("japanese",
    "私はガラスを食べられます。それは私を傷つけません。",
    "東京は日本の首都です。人口は約1400万人です。",
    "今日はいい天気ですね。散歩に行きましょうか？",
    "いろはにほへと ちりぬるを わかよたれそ つねならむ",
    "カタカナとひらがなと漢字が混ざった文章：コンピューターでプログラミングする。",
    "半角カタカナ：ｺﾝﾋﾟｭｰﾀｰ ｶﾞｷﾞｸﾞ ﾊﾟﾋﾟﾌﾟ",
    "「こんにちは」と彼女は言った。『ありがとう』",
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
    "ＡＩ（人工知能）は２０２４年に大きく進歩した。",
    "絵文字も使います🍣🍜🗾🎌",
)
add("korean",
    "나는 유리를 먹을 수 있어요. 그래도 아프지 않아요.",
    "안녕하세요! 오늘 날씨가 정말 좋네요.",
    "대한민국의 수도는 서울입니다. 인구는 약 천만 명입니다.",
    "한글은 세종대왕이 1443년에 창제하였다.",
    "키스의 고유조건은 입술끼리 만나야 하고 특별한 기술은 필요치 않다.",
    "ㄱㄴㄷㄹ ㅏㅑㅓㅕ 호환 자모",
)

# Indic, Thai, other Asian scripts
add("indic",
    "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती।",
    "भारत एक विशाल देश है। इसकी राजधानी नई दिल्ली है।",
    "नमस्ते! आप कैसे हैं? मैं ठीक हूँ, धन्यवाद।",
    "हिन्दी में अंक: ०१२३४५६७८९ और १९४७ में स्वतंत्रता मिली।",
    "संस्कृतम्: सत्यमेव जयते। वसुधैव कुटुम्बकम्।",
    "मराठी: महाराष्ट्राची राजधानी मुंबई आहे.",
    "நான் கண்ணாடி சாப்பிடுவேன், அதனால் எனக்கு ஒரு கேடும் வராது.",
    "தமிழ் உலகின் மிகப் பழமையான மொழிகளில் ஒன்றாகும்.",
    "யாதும் ஊரே யாவரும் கேளிர்.",
    "আমি কাঁচ খেতে পারি, তাতে আমার কোনো ক্ষতি হয় না।",
    "বাংলাদেশের রাজধানী ঢাকা। সংখ্যা: ০১২৩৪৫৬৭৮৯",
    "ਪੰਜਾਬੀ: ਮੈਂ ਗਲਾਸ ਖਾ ਸਕਦਾ ਹਾਂ।",
    "ગુજરાતી: હું કાચ ખાઈ શકું છું.",
    "తెలుగు: నేను గాజు తినగలను.",
    "ಕನ್ನಡ: ನಾನು ಗಾಜನ್ನು ತಿನ್ನಬಲ್ಲೆ.",
    "മലയാളം: എനിക്ക് ഗ്ലാസ് തിന്നാം.",
    "සිංහල: මට වීදුරු කෑමට හැකියි.",
)
add("thai_etc",
    "ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ ทำให้การตัดคำเป็นเรื่องยาก",
    "สวัสดีครับ วันนี้อากาศดีมาก ตัวเลขไทย ๑๒๓๔๕",
    "กรุงเทพมหานคร อมรรัตนโกสินทร์ มหินทรายุธยา มหาดิลกภพ",
    "ລາວ: ຂ້ອຍກິນແກ້ວໄດ້ໂດຍທີ່ມັນບໍ່ໄດ້ເຮັດໃຫ້ຂ້ອຍເຈັບ.",
    "ខ្មែរ: ខ្ញុំអាចញុំកញ្ចក់បាន ដោយគ្មានបញ្ហារ",
    "မြန်မာ: ကျွန်တော် ကျွန်မ မှန်စားနိုင်တယ်။",
    "བོད་ཡིག: ཤེལ་སྒོ་ཟ་ནས་ང་ན་གི་མ་རེད།",
    "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ Mongolian script",
    "አማርኛ: ብርጭቆ መብላት እችላለሁ፣ አይጎዳኝም።",
    "ᏣᎳᎩ Cherokee: ᎣᏏᏲ ᏙᎯᏧ",
    "ꦧꦱꦗꦮ Javanese and ᜊᜌ᜔ᜊᜌᜒᜈ᜔ Baybayin",
)

# RTL
add("rtl",
    "أنا قادر على أكل الزجاج و هذا لا يؤلمني.",
    "اللغة العربية هي إحدى أكثر اللغات انتشاراً في العالم.",
    "مرحباً بكم! كيف حالكم اليوم؟ الأرقام: ٠١٢٣٤٥٦٧٨٩",
    "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ",
    "فارسی: من می‌توانم بدون احساس درد شیشه بخورم. ۱۲۳۴۵۶۷۸۹۰",
    "اردو: میں کانچ کھا سکتا ہوں اور مجھے تکلیف نہیں ہوتی ۔",
    "אני יכול לאכול זכוכית וזה לא מזיק לי.",
    "עברית היא שפה שמית. ירושלים היא עיר עתיקה.",
    "שָׁלוֹם עֲלֵיכֶם, בְּרֵאשִׁית בָּרָא אֱלֹהִים",
    "Mixed RTL: The word שלום means peace, and سلام does too (2024).",
    "\u202eRight-to-left override\u202c and \u200fRLM\u200e LRM marks \u2067isolate\u2069",
    "ייִדיש: איך קען עסן גלאָז און עס טוט מיר נישט װײ.",
)

# Emoji
add("emoji",
    "I love pizza 🍕 and tacos 🌮! 😀😃😄😁😆",
    "Family: 👨‍👩‍👧‍👦 👨‍👨‍👧 👩‍👩‍👦‍👦 and couple 👩‍❤️‍💋‍👨 🧑‍🤝‍🧑",
    "Skin tones: 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 and 👋🏿👋🏾👋🏽👋🏼👋🏻",
    "Professions: 👩🏽‍💻 👨🏿‍🚀 🧑🏻‍🍳 👩‍⚕️ 👮‍♀️ 🕵️‍♂️",
    "Flags: 🇯🇵 🇺🇸 🇫🇷 🇩🇪 🇧🇷 🇮🇳 🇨🇳 🇰🇷 🇺🇦 🇪🇺 🏳️‍🌈 🏴‍☠️ 🏁",
    "Subdivision flags: 🏴󠁧󠁢󠁳󠁣󠁴󠁿 🏴󠁧󠁢󠁥󠁮󠁧󠁿 🏴󠁧󠁢󠁷󠁬󠁳󠁿",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ 🔟 and variation selectors ❤️ ❤︎ ☺️ ☺︎ ✔️",
    "🤖🧠💡🚀🔥💯✨🎉🥳🙏",
    "Emoji without spaces:😂🤣😊😇🙂🙃😉😌😍🥰😘😗😙😚😋😛😝😜🤪🤨🧐🤓😎🥸🤩",
    "Hands 🤌🏼🫶🏽🫡🫠 new emoji 🪿🫎🪼",
    "Text with emoji at the end 🎈",
    "🎈 Text with emoji at the start",
    "Repeated: 😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀",
    "Old symbols: ☀ ☁ ☂ ☃ ★ ☆ ♠ ♣ ♥ ♦ ♪ ♫ ☯ ☮ ⚛ ⚡",
    "Math symbols: ∀x∈ℝ, ∃y: x² + y² ≤ 1; ∑ᵢ aᵢ = ∏ⱼ bⱼ; ∞ ≠ ∅; √2 ≈ 1.414",
    "Mathematical alphanumerics: 𝐁𝐨𝐥𝐝 𝑰𝒕𝒂𝒍𝒊𝒄 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 𝕯𝖔𝖚𝖇𝖑𝖊 𝓢𝓬𝓻𝓲𝓹𝓽 𝟙𝟚𝟛",
    "Musical: 𝄞 𝄢 𝅘𝅥𝅮 and Egyptian hieroglyphs 𓀀 𓁐 𓂀 and cuneiform 𒀀",
    "Box drawing: ┌─┬─┐ │ │ │ ├─┼─┤ └─┴─┘ ░▒▓█ ▲▼◆●",
    "Arrows: ← ↑ → ↓ ↔ ↕ ⇐ ⇒ ⇔ ⟵ ⟶ ➜ ➡",
    "Currency: $ € £ ¥ ₹ ₽ ₩ ₪ ₫ ₿ ¢ ₴ ₺",
)

# Combining marks and normalization
NFD = lambda s: unicodedata.normalize("NFD", s)
add("combining",
    "Cafe\u0301 vs Café: decomposed and precomposed e-acute.",
    "Nai\u0308ve re\u0301sume\u0301 with decomposed accents.",
    NFD("Tiếng Việt: Người ta nói rằng đường đi khó."),
    NFD("Dấu chồng: ặ ẫ ộ ữ ỡ ệ ẩ ằ ớ ự ỷ ĩ ổ ễ."),
    NFD("한국어 자모 분해: 안녕하세요, 세계!"),
    NFD("Ελληνικά με τόνους: ἐν ἀρχῇ ἦν ὁ λόγος."),
    NFD("Ångström and Øresund and Ærøskøbing."),
    "Angstrom sign \u212b and Kelvin sign \u212a and Ohm sign \u2126 (singletons).",
    "Reordered marks: a\u0302\u0323 vs a\u0323\u0302 and q\u0307\u0323 vs q\u0323\u0307.",
    "Devanagari nukta: \u0915\u093c \u0958 \u0916\u093c \u0959 (composition exclusions).",
    "Hangul LV+T: \u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
    "Ligatures and compatibility: ﬁ ﬂ ﬀ ﬃ Ⅻ ½ ¼ ² ³ ㎏ ㎞ ℡ ™ ℃",
    "Combining enclosing: A\u20dd B\u20de C\u20e3 and combining grapheme joiner a\u034fb",
    "Stacked: e\u0301\u0301\u0301\u0301 o\u0308\u0304 u\u0308\u0301 i\u0307\u0301",
)
# Zalgo: letters with 3–12 combining marks each, chosen by the fixed generator.
ZALGO_MARKS = [chr(c) for c in range(0x0300, 0x036F)] + [chr(c) for c in range(0x1DC0, 0x1DCA)]
def zalgo(s, lo, hi):
    out = []
    for ch in s:
        out.append(ch)
        if ch != " ":
            for _ in range(lo + rng.below(hi - lo + 1)):
                out.append(rng.pick(ZALGO_MARKS))
    return "".join(out)
add("zalgo",
    zalgo("He comes", 3, 8),
    zalgo("The Nezperdian hive-mind of chaos", 1, 4),
    zalgo("ZALGO!", 8, 12),
)

# Full-width and other width forms
add("fullwidth",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ：ＡＢＣ　ａｂｃ　１２３！？",
    "ＨＥＬＬＯ，ＷＯＲＬＤ！　ｄｏｎ＇ｔ　ｓｔｏｐ．",
    "Ideographic\u3000space\u3000between\u3000words\u3000\u3000and two.",
    "全角数字１２３４５６７８９０と半角数字1234567890",
    "＜ｔａｇ＞（括弧）［角括弧］｛波括弧｝〈山括弧〉《二重》【隅付き】",
    "Wave dash 〜 vs fullwidth tilde ～ vs tilde ~",
)

# Characters whose class differs between regex engines or Unicode versions (JS \s vs PCRE2
# \s, title case, letter-like numbers, format characters).
add("unicode_edges",
    "a\ufeffb \ufeff x (byte order mark inside text)",
    "\ufeffBOM at the start",
    "Mongolian vowel separator a\u180eb \u180e and Ogham space x\u1680y \u1680 z",
    "Title-case digraphs ǅungla ǈ ǋ and small roman numerals ⅰⅱ ⅻ",
    "Modifier letters ʰʲ ˈ ꜛ and iota subscript \u0345x",
    "Thai sara am \u0e33 and thanthakhat \u0e4c alone",
    "Joiners alone \u200c\u200d and regional indicators without a pair \U0001F1E6 x",
    "Private use \ue000\uf8ff and noncharacters \ufdd0\uffff\U0010FFFF at the end",
    "Replacement character \ufffd in valid text",
)

# Whitespace-only and empty
add("whitespace",
    "", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\n\n\n", "\t\t\t", " \n ",
    "\u3000", "\u00a0", "        ", "\n \n \n", "\r", "\r\r\n\n", " \t \t ",
    "        four tabs worth of spaces followed by text",
    "text followed by many spaces                                ",
    "a  b   c    d     e      f       g        h",
    "a\n\nb\n\n\nc\n\n\n\nd\n\n\n\n\ne",
    "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    " " * 70,
    "\t\n\t\n\t\n",
    "   \n   \n   x",
    "x \n y \r\n z \t w",
)

# Digits and numbers
add("digits",
    "1234567890123456789012345678901234567890",
    "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899862803482534211706798",
    "0", "00", "007", "1", "12", "123", "1234", "12345", "123456", "1234567",
    "Call +1 (555) 123-4567 or +44 20 7946 0958 before 23:59:59.",
    "Numbers: 1,234,567.89 and 1.234.567,89 and 1 234 567,89 and 1'234'567.89",
    "Scientific: 6.022e23, 1.6E-19, -0.0, +1e+10, 0x1F, 0b1010, 0o777, 1_000_000",
    "Dates: 2024-06-11T12:34:56Z, 11/06/2024, 06.11.2024, 2024年6月11日",
    "Arabic-Indic ٠١٢٣٤٥٦٧٨٩ Extended ۰۱۲۳۴۵۶۷۸۹ Devanagari ०१२३४५६७८९ Thai ๐๑๒๓๔๕๖๗๘๙",
    "Fullwidth １２３４５６７８９０ superscripts ¹²³⁴ subscripts ₁₂₃₄ roman ⅠⅡⅢⅣ circled ①②③",
    "Version 1.2.3-beta.4+build.567 and IP 192.168.0.1 and port :8080",
    "v1.0 v2.10 v10.0.1 x86_64 arm64 i386 utf-8 utf8 base64 sha256",
    "9999999999999999999999999999999999999999999999999999999999999999999999999999",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "$1,000,000.00 €99,99 ¥10000 £3.50 ₹2,50,000",
)

# Source code
add("code",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "class Foo:\n    \"\"\"Docstring.\"\"\"\n\n    def __init__(self, x: int = 0) -> None:\n        self.x = x  # comment\n\n    def __repr__(self):\n        return f\"Foo({self.x!r})\"\n",
    "import numpy as np\n\nx = np.arange(10)\nprint(x[::2], x.sum(), x @ x)\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)\n\telse:\n\t\tcontinue\n",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n    printf(\"Hello, %s!\\n\", argc > 1 ? argv[1] : \"world\");\n    return 0;\n}\n",
    "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
    "for (size_t i = 0; i < n; ++i) { a[i] += b[i] * c[i]; } // vectorizable?",
    "{\"name\": \"neuronlab\", \"version\": \"0.1.0\", \"tags\": [\"c\", \"llm\"], \"nested\": {\"a\": 1, \"b\": null, \"c\": true}}",
    "{\n  \"key\": \"value\",\n  \"list\": [1, 2, 3],\n  \"escaped\": \"quote \\\" backslash \\\\ unicode \\u00e9\"\n}",
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Test &amp; page</title></head>\n<body>\n  <div class=\"main\" id='x'>Hello &lt;world&gt; &nbsp;</div>\n</body>\n</html>",
    "<table><tr><th>Name</th><td>Value</td></tr></table><h1>Title</h1><blockquote>Quote</blockquote>",
    "const add = (a, b) => a + b;\nlet arr = [1, 2, 3].map(x => x ** 2);\nconsole.log(`sum: ${arr.reduce(add, 0)}`);",
    "fn main() {\n    let v: Vec<i32> = (0..10).collect();\n    println!(\"{:?}\", v.iter().sum::<i32>());\n}",
    "SELECT id, name FROM users WHERE age >= 18 AND email LIKE '%@example.com' ORDER BY name DESC;",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do\n  echo \"$f\" | tr 'a-z' 'A-Z' > \"${f%.txt}.out\"\ndone",
    "all: build\n\nbuild:\n\t$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)\n\n.PHONY: all build\n",
    "\\begin{equation}\n  E = mc^2 \\quad \\text{and} \\quad \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}",
    "| Column A | Column B |\n|----------|----------|\n| `code`   | **bold** |\n| _italic_ | [link](http://x.y) |",
    "regex: ^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@[a-z]+\\.[a-z]{2,}$",
    "if (x != y && !(a || b)) { return x->next ? *x->next : NULL; } /* done */",
    "x+=1;y-=2;z*=3;w/=4;v%=5;u<<=1;t>>=2;s&=3;r|=4;q^=5;p**=2;o//=3",
    "    indented with four spaces\n        and eight\n            and twelve\n\t\tand two tabs",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"こんにちは, 世界\")\n}\n",
    "<?php echo htmlspecialchars($_GET['q'] ?? ''); ?>",
    "public static void main(String[] args) { System.out.println(\"Hello\"); }",
    "a = {'k': [1, 2.5, None, True], \"s\": 'it\\'s'}; b = a['k'][-1:]",
    "yaml:\n  - name: test\n    run: make test\n    env:\n      CC: gcc-12\n",
    "diff --git a/x.c b/x.c\n--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n-int x = 1;\n+int x = 2;\n",
    "    ",
)

# URLs and e-mails
add("urls",
    "https://www.example.com/path/to/page?query=string&foo=bar#fragment",
    "Visit http://example.org or https://sub.domain.co.uk:8443/a/b/c.html?x=1&y=2 today.",
    "ftp://user:pass@ftp.example.net/file.tar.gz and file:///home/user/doc.pdf",
    "Email me at john.doe+tag@example.com or JANE_SMITH@Example.CO.UK.",
    "mailto:info@例え.jp and https://ja.wikipedia.org/wiki/日本語 and https://xn--r8jz45g.jp/",
    "https://github.com/user/repo/blob/main/src/file.c#L10-L20",
    "Search: https://www.google.com/search?q=hello+world&hl=en&num=10",
    "data:text/plain;base64,SGVsbG8sIFdvcmxkIQ==",
    "<https://example.com> [link](https://example.com/x_(y)) @username #hashtag",
    "git@github.com:user/repo.git ssh://git@host:22/repo",
)

# Special-token look-alikes (matched as special tokens only with --parse-special)
add("specials",
    "<|endoftext|>",
    "Hello<|endoftext|>World",
    "Document one.<|endoftext|>Document two.<|endoftext|>",
    "<s>",
    "</s>",
    "<s> [INST] What is 2+2? [/INST] 4 </s>",
    "<unk> <pad> <mask> <bos> <eos>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\nParis.<end_of_turn>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<tool_call>{\"name\": \"f\"}</tool_call> <|fim_prefix|>def<|fim_suffix|>pass<|fim_middle|>",
    "<think>\nreasoning\n</think>\n\nanswer",
    "[multimodal] <unused0> <unused99> <start_of_image> <end_of_image>",
    "Almost special: <|endoftext| <|endoftext <endoftext|> < |endoftext| > <s > < s> <<s>> <S>",
    "<|reserved_special_token_0|> <|reserved_special_token_250|>",
    "<|endoftext|><|endoftext|><|endoftext|>",
    " <|endoftext|> ",
    "text<s>text</s>text",
    "\u2581metaspace\u2581characters\u2581\u2581written\u2581\u2581\u2581in the text",
    "\u2581",
    "<0x41> <0xFF> byte-fallback look-alikes",
    "Ġhello Ċ âĢĻ byte-level look-alikes",
)

# Long texts: paragraphs and a few very long words/lines.
PARA_EN = ("Language models are trained on large amounts of text. They learn to predict the next "
           "token given the previous ones, and in doing so they acquire a surprising amount of "
           "knowledge about grammar, facts, and reasoning. ")
PARA_ZH = "语言模型在大量文本上进行训练。它们学习根据前面的词预测下一个词，并在此过程中获得大量关于语法、事实和推理的知识。"
PARA_RU = "Языковые модели обучаются на больших объёмах текста и учатся предсказывать следующее слово. "
add("long",
    PARA_EN * 4,
    PARA_ZH * 3,
    PARA_RU * 3,
    "x" * 1000,
    "ab" * 300,
    "=" * 200,
    "-" * 120 + "\n" + "=" * 120,
    "Hello " * 100,
    " ".join(str(i) for i in range(200)),
    "".join(str(i) for i in range(300)),
    "\n".join("Line %d: %s" % (i, PARA_EN[:40 + i]) for i in range(20)),
    "🙂" * 200,
    "가" * 300,
    "ก" * 200,
    "\u00e9" * 100 + "e\u0301" * 100,
)

# Mixed-script texts built from the sentences above, by the fixed generator.
pool = [t for c, t in T if c in ("english", "latin", "cyrillic", "greek", "chinese", "japanese",
                                 "korean", "indic", "thai_etc", "rtl", "emoji", "code", "urls")]
seps = [" ", "\n", "  ", "\t", "\r\n", "", " - ", "\n\n", ". "]
for i in range(40):
    parts = [rng.pick(pool) for _ in range(2 + rng.below(3))]
    text = ""
    for j, p in enumerate(parts):
        if j:
            text += rng.pick(seps)
        # a random slice keeps texts short and cuts inside words, emoji and digit runs
        a = rng.below(max(1, len(p) // 2))
        b = a + 1 + rng.below(len(p) - a)
        text += p[a:b]
    add("mixed", text)

# Random short strings from "interesting" characters, cut across categories.
chars = (" \t\n\r'\"0123456789abcXYZ.,;:!?-_/\\()[]{}<>|&@#$%^*~`+=" "éÉßøñçü" "αβγΩ" "абвЖ" "中文字" "かなカナ" "한글"
         "अआक्ष" "ทยไ" "عربي" "עב" "😀👍🏽🇯🇵" "\u200d\u200b\u00a0\u3000\u2581\u0301\ufe0f")
for i in range(30):
    add("random", "".join(rng.pick(chars) for _ in range(3 + rng.below(40))))


def rows_jsonl(texts):
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def corpus_text():
    texts = [t for _, t in T]
    # no NUL anywhere (C strings in the CLI are fine with it, but keep the corpus NUL-free)
    assert all("\x00" not in t for t in texts)
    # every text must be valid Unicode (no lone surrogates) so the JSON is valid UTF-8
    for t in texts:
        t.encode("utf-8")
    return rows_jsonl(texts)


# Lone surrogates, as JSON \u escapes (ensure_ascii keeps them as escapes).
SURROGATES = [
    "lone high \ud800 surrogate",
    "lone low \udc00 surrogate",
    "\ud83d",
    "reversed pair \ude00\ud83d here",
    "high at the end \udbff",
    "two highs \ud800\ud800 then text",
    "emoji 😀 then lone \udfff and valid 𝄞",
]


def surrogates_text():
    return "".join(json.dumps({"text": t}, ensure_ascii=True) + "\n" for t in SURROGATES)


# Raw invalid UTF-8 inside JSON strings (bytes), one row each.
INVALID = [
    b"lone continuation \x80 byte",
    b"truncated two-byte \xc3 sequence",
    b"truncated three-byte \xe2\x82 sequence",
    b"truncated four-byte \xf0\x9f\x98 sequence",
    b"overlong slash \xc0\xaf and overlong NUL \xc0\x80",
    b"surrogate encoded \xed\xa0\x80 in UTF-8 (CESU)",
    b"beyond U+10FFFF \xf4\x90\x80\x80 and \xf8\x88\x80\x80\x80",
    b"bytes \xfe\xff\xff\xfe and Latin-1 caf\xe9 na\xefve",
    b"\xff",
    b"valid \xc3\xa9 then invalid \xc3\x28 then valid \xe2\x82\xac",
]


def invalid_bytes():
    out = b""
    for b in INVALID:
        out += b'{"text": "' + b + b'"}\n'
    return out


def main():
    check = "--check" in sys.argv[1:]
    files = {
        "corpus.jsonl": corpus_text().encode("utf-8"),
        "surrogates.jsonl": surrogates_text().encode("ascii"),
        "invalid_utf8.jsonl": invalid_bytes(),
    }
    stale = []
    for name, data in files.items():
        path = os.path.join(HERE, name)
        if check:
            try:
                with open(path, "rb") as f:
                    if f.read() != data:
                        stale.append(name)
            except OSError:
                stale.append(name)
        else:
            with open(path, "wb") as f:
                f.write(data)
    if check:
        if stale:
            print("out of date: " + ", ".join(stale) + " (run python3 tests/tokenizer/make_corpus.py)")
            return 1
        return 0
    cats = {}
    for c, _ in T:
        cats[c] = cats.get(c, 0) + 1
    print("%d texts (%s); %d surrogate rows; %d invalid UTF-8 rows"
          % (len(T), ", ".join("%s %d" % kv for kv in cats.items()), len(SURROGATES), len(INVALID)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
