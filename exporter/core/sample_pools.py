"""What sample segments are made of (`exporter.core.samples` draws its rows from here): names in
many scripts with the romanisations their emails use, places with their postal code patterns,
loyalty tiers and email domains, weighted as in real exports; and the ways an invalid email is
malformed and a duplicate is disguised.

Latin names are romanised by `_fold()`; other scripts carry their romanisation explicitly.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable
from typing import Final

_Pairs = tuple[tuple[str, str], ...]


def _pairs(text: str) -> _Pairs:
    """'native:roman native:roman ...' -> ((native, roman), ...)."""
    return tuple((native, roman) for native, _, roman in (w.partition(":") for w in text.split()))


_FOLD: Final = str.maketrans(
    {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "đ": "d", "Đ": "D", "\u0131": "i"}
    | {"æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D"}
)


def _fold(name: str) -> str:
    """ASCII romanisation of a Latin-script name for an email local part: 'Dvořák' -> 'dvorak'."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_FOLD))
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()


def _latin(text: str) -> _Pairs:
    """'Name Name ...' -> ((name, romanisation), ...)."""
    return tuple((name, _fold(name)) for name in text.split())


_LATIN_ASCII_FIRST: Final = _latin(
    "James Mary John Patricia Robert Jennifer Michael Linda David Emily Sarah Daniel Olivia Liam "
    "Noah Emma Ava Ethan Grace Henry Mia Lucas Sophie Jack Hannah Oliver Chloe Ryan Megan Tom"
)
_LATIN_ASCII_LAST: Final = _latin(
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore Martin "
    "Jackson Thompson White Harris Clark Lewis O'Brien Walker Young King Wright Scott Hill "
    "Green Adams Baker Nelson Carter Mitchell Roberts Turner Phillips Campbell Smith-Jones"
)
_LATIN_DIACRITIC_FIRST: Final = _latin(
    "José Zoë Łukasz François Søren Björn Chloé Renée Jürgen Małgorzata Tomáš Inés Joël Ágnes "
    "Çağla Núria Åsa Mikuláš Anaïs Stéphane Gülşen Thúy Dóra Žaneta Ørjan Sébastien Íñigo "
    "Jiří Marlène Raphaël"
)
_LATIN_DIACRITIC_LAST: Final = _latin(
    "Ñuñez García Dvořák Müller Søndergaard Kowalski Lefèvre Gonçalves Öztürk Jørgensen Novák "
    "Hernández Björklund Wiśniewski Čapek Nguyễn Đặng Strauß Mäkinen Łęcki Ćosić Şahin Þórsson "
    "Ødegård Pérez Lindström Horváth Fernández Kovačević Nørgaard"
)

_NON_LATIN: Final[dict[str, tuple[_Pairs, _Pairs]]] = {
    "cyrillic": (
        _pairs(
            "Иван:ivan Ольга:olga Дмитрий:dmitry Анастасия:anastasia Сергей:sergey "
            "Наталья:natalya Алексей:alexey Екатерина:ekaterina Олександр:oleksandr "
            "Марія:mariia Богдан:bohdan Светлана:svetlana"
        ),
        _pairs(
            "Иванов:ivanov Смирнова:smirnova Кузнецов:kuznetsov Попова:popova Соколов:sokolov "
            "Лебедева:lebedeva Шевченко:shevchenko Петров:petrov Бондаренко:bondarenko "
            "Ковальчук:kovalchuk Георгиев:georgiev Йорданова:yordanova"
        ),
    ),
    "greek": (
        _pairs(
            "Γιώργος:giorgos Μαρία:maria Δημήτρης:dimitris Ελένη:eleni Νίκος:nikos "
            "Αικατερίνη:aikaterini Κωνσταντίνος:konstantinos Σοφία:sofia Ιωάννα:ioanna"
        ),
        _pairs(
            "Παπαδόπουλος:papadopoulos Παπαδοπούλου:papadopoulou Γεωργίου:georgiou "
            "Οικονόμου:oikonomou Νικολάου:nikolaou Βασιλείου:vasileiou Καραγιάννης:karagiannis"
        ),
    ),
    "arabic": (
        _pairs(
            "محمد:mohammed فاطمة:fatima أحمد:ahmed عائشة:aisha علي:ali ليلى:layla يوسف:youssef "
            "مريم:maryam عمر:omar نور:nour"
        ),
        _pairs(
            "الحسن:alhassan حداد:haddad منصور:mansour خوري:khoury السيد:elsayed عبدالله:abdullah "
            "ناصر:nasser سليمان:suleiman"
        ),
    ),
    "chinese": (
        _pairs("伟:wei 芳:fang 娜:na 敏:min 静:jing 磊:lei 洋:yang 杰:jie 秀英:xiuying 子涵:zihan"),
        _pairs("王:wang 李:li 张:zhang 刘:liu 陈:chen 杨:yang 黄:huang 赵:zhao 周:zhou 吴:wu"),
    ),
    "japanese": (
        _pairs("翔太:shota 陽菜:hina 蓮:ren 結衣:yui 健:ken さくら:sakura 大翔:hiroto 美咲:misaki"),
        _pairs(
            "佐藤:sato 鈴木:suzuki 高橋:takahashi 田中:tanaka 渡辺:watanabe 伊藤:ito 山本:yamamoto"
        ),
    ),
    "korean": (
        _pairs("민준:minjun 서연:seoyeon 지훈:jihoon 지민:jimin 하은:haeun 도윤:doyoon"),
        _pairs("김:kim 이:lee 박:park 최:choi 정:jung 강:kang"),
    ),
    "devanagari": (
        _pairs(
            "आरव:aarav प्रिया:priya राहुल:rahul अनन्या:ananya विवेक:vivek स्नेहा:sneha "
            "अर्जुन:arjun दीप्ति:dipti"
        ),
        _pairs(
            "शर्मा:sharma वर्मा:verma गुप्ता:gupta सिंह:singh पटेल:patel जोशी:joshi कुमार:kumar मेहता:mehta"
        ),
    ),
}

# Share of names per script, in percent.
_SCRIPT_WEIGHTS: Final = {
    "ascii": 45,
    "latin": 25,
    "cyrillic": 6,
    "greek": 3,
    "arabic": 5,
    "chinese": 6,
    "japanese": 3,
    "korean": 2,
    "devanagari": 5,
}

# (city, state/province, country/region, postal pattern): "#" is a digit, "@" an upper-case letter.
_PLACES: Final = (
    ("New York", "NY", "United States", "100##"),
    ("Los Angeles", "CA", "United States", "900##"),
    ("Chicago", "IL", "United States", "606##"),
    ("Houston", "TX", "United States", "770##"),
    ("Seattle", "WA", "United States", "981##"),
    ("Denver", "CO", "United States", "802##"),
    ("Boston", "MA", "United States", "021##"),
    ("Atlanta", "GA", "United States", "303##"),
    ("Miami", "FL", "United States", "331##"),
    ("Washington, D.C.", "DC", "United States", "200##"),
    ("Toronto", "ON", "Canada", "M5V #@#"),
    ("Montréal", "QC", "Canada", "H2X #@#"),
    ("Vancouver", "BC", "Canada", "V6B #@#"),
    ("Québec", "QC", "Canada", "G1R #@#"),
    ("London", "England", "United Kingdom", "SW1A #@@"),
    ("Manchester", "England", "United Kingdom", "M1 #@@"),
    ("Edinburgh", "Scotland", "United Kingdom", "EH1 #@@"),
    ("Cardiff", "Wales", "United Kingdom", "CF10 #@@"),
    ("München", "Bayern", "Germany", "80###"),
    ("Berlin", "Berlin", "Germany", "10###"),
    ("Köln", "Nordrhein-Westfalen", "Germany", "50###"),
    ("Paris", "Île-de-France", "France", "750##"),
    ("Lyon", "Auvergne-Rhône-Alpes", "France", "6900#"),
    ("Marseille", "Provence-Alpes-Côte d'Azur", "France", "130##"),
    ("Madrid", "Comunidad de Madrid", "Spain", "280##"),
    ("Barcelona", "Cataluña", "Spain", "080##"),
    ("Sevilla", "Andalucía", "Spain", "410##"),
    ("Kraków", "Małopolskie", "Poland", "30-###"),
    ("Łódź", "Łódzkie", "Poland", "90-###"),
    ("Warszawa", "Mazowieckie", "Poland", "00-###"),
    ("København", "Hovedstaden", "Denmark", "1###"),
    ("Aarhus", "Midtjylland", "Denmark", "8000"),
    ("Praha", "Hlavní město Praha", "Czechia", "1#0 00"),
    ("Brno", "Jihomoravský kraj", "Czechia", "602 00"),
    ("Αθήνα", "Αττική", "Greece", "10# ##"),
    ("Київ", "Київ", "Ukraine", "01###"),
    ("София", "София-град", "Bulgaria", "1###"),
    ("東京", "東京都", "Japan", "1##-####"),
    ("大阪", "大阪府", "Japan", "530-00##"),
    ("上海", "上海市", "China", "200###"),
    ("서울", "서울특별시", "South Korea", "0####"),
    ("Mumbai", "Maharashtra", "India", "4000##"),
    ("New Delhi", "Delhi", "India", "1100##"),
    ("Bengaluru", "Karnataka", "India", "5600##"),
    ("Dubai", "Dubai", "United Arab Emirates", ""),
    ("القاهرة", "محافظة القاهرة", "Egypt", "11###"),
    ("São Paulo", "SP", "Brazil", "01###-###"),
    ("Ciudad de México", "CDMX", "Mexico", "06###"),
    ("Sydney", "NSW", "Australia", "2000"),
    ("Melbourne", "VIC", "Australia", "3000"),
)

# Repeats weight the draw (3 bits pick one of 8).
DOMAINS: Final = (
    "example.com",
    "example.com",
    "example.org",
    "example.net",
    "mail.example.net",
    "post.example.org",
    "customers.test",
    "inbox.example",
)
_TIERS: Final = {"Bronze": 45, "Silver": 30, "Gold": 18, "Platinum": 7}  # percent

# Per-row choices index pools drawn once per file, so a row costs one getrandbits(); optional
# fields are blanked (each ~10%, independently) when a pool is drawn, not per row.
_BLANK_SHARE: Final = 0.1
NAME_BITS: Final = 14  # 16,384 (first, last, first_ascii, last_ascii)
PLACE_BITS: Final = 12  # 4,096 (city, state, country, postal code)
TIER_BITS: Final = 6  # 64 loyalty tiers

_Quad = tuple[str, str, str, str]


def _blanked(rng: random.Random, value: str) -> str:
    """The value, or "" ~10% of the time: optional fields are often empty in real exports."""
    return "" if rng.random() < _BLANK_SHARE else value


def name_pool(rng: random.Random) -> list[_Quad]:
    """(first, last, first_ascii, last_ascii), weighted by script; names may be blank, never the
    romanisations (the email needs them)."""
    by_script: dict[str, tuple[_Pairs, _Pairs]] = {
        "ascii": (_LATIN_ASCII_FIRST, _LATIN_ASCII_LAST),
        "latin": (_LATIN_DIACRITIC_FIRST, _LATIN_DIACRITIC_LAST),
        **_NON_LATIN,
    }
    scripts = rng.choices(
        list(_SCRIPT_WEIGHTS), weights=list(_SCRIPT_WEIGHTS.values()), k=1 << NAME_BITS
    )
    pool = []
    for script in scripts:
        firsts, lasts = by_script[script]
        (first, first_ascii), (last, last_ascii) = rng.choice(firsts), rng.choice(lasts)
        pool.append((_blanked(rng, first), _blanked(rng, last), first_ascii, last_ascii))
    return pool


def place_pool(rng: random.Random) -> list[_Quad]:
    """(city, state, country, postal code), postal codes filled in, each field maybe blank."""
    pool = []
    for _ in range(1 << PLACE_BITS):
        city, state, country, pattern = rng.choice(_PLACES)
        postal = "".join(
            str(rng.randrange(10)) if c == "#" else chr(65 + rng.randrange(26)) if c == "@" else c
            for c in pattern
        )
        city, state, country, postal = (_blanked(rng, v) for v in (city, state, country, postal))
        pool.append((city, state, country, postal))
    return pool


def tier_pool(rng: random.Random) -> list[str]:
    """Loyalty tiers, weighted, ~10% blank."""
    tiers = rng.choices(list(_TIERS), weights=list(_TIERS.values()), k=1 << TIER_BITS)
    return [_blanked(rng, tier) for tier in tiers]


# Invalid emails: shapes every RFC 5322 dot-atom validator rejects, never blank.
INVALID_FORMS: Final[tuple[Callable[[str, str, int, str], str], ...]] = (
    lambda first, last, n, domain: f"{first}.{last}.{n}.{domain}",  # no @
    lambda first, last, n, domain: f"{first}.{last}.{n}@@{domain}",  # two @
    lambda first, last, n, domain: f"{first}@{last}.{n}@{domain}",  # two @
    lambda first, last, n, domain: f"{first} {last}.{n}@{domain}",  # space inside
    lambda first, last, n, domain: f"@{domain}",  # empty local part
    lambda first, last, n, domain: f"{first}.{last}.{n}@",  # empty domain
    lambda first, last, n, domain: f"{first}{last}{n}@{domain.partition('.')[0]}",  # no dot
    lambda first, last, n, domain: f"{first}..{last}.{n}@{domain}",  # consecutive dots
    lambda first, last, n, domain: f"{first}.{last}.{n}@.{domain}",  # domain starts with a dot
    lambda first, last, n, domain: f"{first}_{last}{n}@{domain}.",  # domain ends with a dot
    lambda first, last, n, domain: f".{first}.{last}.{n}@{domain}",  # local starts with a dot
)

# Ways a duplicate differs from its first occurrence: case and/or surrounding spaces, never neither.
_CASES: Final[tuple[Callable[[str], str], ...]] = (
    lambda e: e,
    str.upper,
    str.title,
    str.capitalize,
)
_SPACES: Final = (("", ""), (" ", ""), ("", " "), ("  ", " "))
ALTERATIONS: Final = tuple(
    (case, spaces) for case in _CASES for spaces in _SPACES if case is not _CASES[0] or any(spaces)
)
