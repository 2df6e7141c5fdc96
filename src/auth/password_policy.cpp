#include "auth/password_policy.hpp"

#include <array>
#include <string>

#include "common/limits.hpp"
#include "common/text.hpp"

namespace apop::auth {
namespace {

// Common passwords of 12+ characters (from public breach corpora), lowercase.
constexpr std::string_view kCommon[] = {
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456789012345",
    "1234567890qwerty",
    "qwertyuiop123",
    "qwertyuiop1234",
    "qwertyuiopasdf",
    "qwertyuiopasdfghjkl",
    "qwertyuiopasdfghjklzxcvbnm",
    "iloveyou1234",
    "iloveyou12345",
    "iloveyou123456",
    "iloveyouiloveyou",
    "iloveyoubaby",
    "iloveyou2024",
    "iloveyousomuch",
    "passwordpassword",
    "abcdefghijkl",
    "abcdefghijklm",
    "abcdefghijklmnop",
    "abcdefghijklmnopqrstuvwxyz",
    "1q2w3e4r5t6y",
    "1q2w3e4r5t6y7u",
    "1qaz2wsx3edc",
    "1qaz2wsx3edc4rfv",
    "zaq12wsxcde3",
    "zaq1zaq1zaq1",
    "q1w2e3r4t5y6",
    "a1b2c3d4e5f6",
    "password1234",
    "password12345",
    "password123456",
    "password123!",
    "p@ssw0rd1234",
    "p@ssword1234",
    "passw0rd1234",
    "letmein12345",
    "letmein123456",
    "welcome12345",
    "welcome123456",
    "administrator",
    "administrator1",
    "administrator123",
    "changeme1234",
    "changeme12345",
    "ilovemymom123",
    "loveyouforever",
    "ihateyou1234",
    "princess1234",
    "princess12345",
    "sunshine1234",
    "football1234",
    "baseball1234",
    "basketball12",
    "basketball123",
    "superman1234",
    "superman12345",
    "batman123456",
    "starwars1234",
    "starwars12345",
    "trustno1trustno1",
    "monkey123456",
    "dragon123456",
    "michael12345",
    "jennifer1234",
    "jessica12345",
    "charlie12345",
    "liverpool123",
    "chelsea12345",
    "arsenal12345",
    "manchesterunited",
    "manutd123456",
    "barcelona123",
    "realmadrid12",
    "juventus1234",
    "thequickbrownfox",
    "thequickbrownfoxjumpsoverthelazydog",
    "correcthorsebatterystaple",
    "correcthorse",
    "letmeinletmein",
    "qwertyqwerty",
    "asdfasdfasdf",
    "asdfghjkl123",
    "asdfghjklqwe",
    "zxcvbnm12345",
    "zxcvbnmasdfg",
    "qwerty123456",
    "qwerty1234567",
    "qwertyuiop12",
    "qwertyuiopas",
    "1234qwerasdf",
    "1234qwerasdfzxcv",
    "qwer1234asdf",
    "abc123abc123",
    "abcd1234abcd",
    "abcd12345678",
    "aaaaaaaaaaaa",
    "111111111111",
    "000000000000",
    "123123123123",
    "121212121212",
    "987654321098",
    "098765432109",
    "147258369147",
    "159753159753",
    "147852369123",
    "789456123789",
    "ilovemyself1",
    "mypassword123",
    "mypassword12",
    "mysecretpassword",
    "secretpassword",
    "supersecret123",
    "supersecretpassword",
    "topsecret123",
    "masterpassword",
    "passwordmaster",
    "password4321",
    "passwordabc1",
    "default12345",
    "guestguest12",
    "rootpassword",
    "toor12345678",
    "adminadmin123",
    "admin1234567",
    "adminpassword",
    "useruser1234",
    "testtest1234",
    "test12345678",
    "testpassword",
    "temppassword",
    "temporary123",
    "newpassword1",
    "newpassword123",
    "changemenow1",
    "pleaseletmein",
    "opensesame123",
    "whatever1234",
    "nopassword12",
    "blahblahblah",
    "hellohello12",
    "helloworld123",
    "hello1234567",
    "goodluck1234",
    "happy1234567",
    "happybirthday",
    "merrychristmas",
    "christmas2023",
    "summer2024!!",
    "winter123456",
    "spring123456",
    "autumn123456",
    "january12345",
    "september123",
    "december1234",
    "monday123456",
    "sunday123456",
    "pokemon12345",
    "minecraft123",
    "fortnite1234",
    "playstation1",
    "playstation2",
    "playstation3",
    "nintendo1234",
    "computer1234",
    "internet1234",
    "windows12345",
    "microsoft123",
    "google123456",
    "facebook1234",
    "linkedin1234",
    "twitter12345",
    "instagram123",
    "youtube12345",
    "samsung12345",
    "iphone123456",
    "apple1234567",
    "chocolate123",
    "cookie123456",
    "butterfly123",
    "sweetheart12",
    "lovelove1234",
    "angel1234567",
    "babygirl1234",
    "prettygirl12",
    "mybaby123456",
    "soccer123456",
    "hockey123456",
    "tennis123456",
    "jordan232323",
    "michaeljordan",
    "harrypotter1",
    "harrypotter123",
    "lordoftherings",
    "gameofthrones",
    "startrek1234",
    "spiderman123",
    "ironman12345",
    "batmanbatman",
    "captainamerica",
    "avengers1234",
    "pepperoni123",
    "pizzapizza12",
    "cheese123456",
    "banana123456",
    "orange123456",
    "strawberry12",
    "watermelon12",
    "blueberry123",
    "sunflower123",
    "rainbow12345",
    "freedom12345",
    "liberty12345",
    "america12345",
    "unitedstates",
    "canada123456",
    "australia123",
    "newyorkcity1",
    "losangeles12",
    "california12",
    "mustang12345",
    "ferrari12345",
    "porsche12345",
    "mercedes1234",
    "qazwsxedcrfv",
    "qazwsxedc123",
    "wsxedcrfvtgb",
    "1qazxsw23edc",
    "!qaz2wsx#edc",
    "!qaz@wsx#edc",
    "1q2w3e4r1q2w",
    "q1w2e3r4q1w2",
    "zaq1xsw2cde3",
    "asdf1234asdf",
    "1234abcd1234",
    "0987654321qw",
    "1122334455667788",
    "112233445566",
    "123321123321",
    "123456654321",
    "654321123456",
    "11223344556677",
    "696969696969",
    "420420420420",
    "abcabcabcabc",
    "aabbccddeeff",
    "passpasspass",
    "loginlogin12",
    "security1234",
    "welcomehome1",
    "welcometo123",
    "accessgranted",
    "letmein2024!",
    "trustnoone12",
    "nothingtohide",
    "iamthebest123",
    "youareawesome",
    "ilovemusic12",
    "ilovejesus12",
    "jesuschrist1",
    "godisgood123",
    "blessed12345",
    "thankyoulord",
    "familyfirst1",
    "mother123456",
    "father123456",
    "brother12345",
    "sister123456",
    "daddysgirl12",
    "mommy1234567",
    "password!234",
    "passw0rd!234",
    "qwerty!@#$%^",
    "!@#$%^&*()_+",
    "1234567890-=",
    "qwertyuiop[]",
    "asdfghjkl;'\\",
};

// Common words that stay weak whatever digits/symbols are stuck around them.
constexpr std::string_view kCommonWords[] = {
    "password",    "passwort",   "passwd",   "passw0rd",   "p@ssword",    "p@ssw0rd",
    "qwerty",      "qwertyuiop", "letmein",  "welcome",    "admin",       "administrator",
    "iloveyou",    "monkey",     "dragon",   "football",   "baseball",    "basketball",
    "soccer",      "master",     "sunshine", "princess",   "shadow",      "superman",
    "batman",      "spiderman",  "trustno",  "michael",    "jennifer",    "hunter",
    "secret",      "login",      "starwars", "whatever",   "summer",      "winter",
    "spring",      "autumn",     "changeme", "default",    "root",        "test",
    "guest",       "user",       "hello",    "helloworld", "freedom",     "abc",
    "abcdef",      "asdf",       "asdfgh",   "zxcvbn",     "pokemon",     "minecraft",
    "computer",    "internet",   "charlie",  "liverpool",  "chelsea",     "arsenal",
    "barcelona",   "christmas",  "pass",     "mypassword", "newpassword", "letmeinnow",
    "welcomeback", "apop",       "mail",     "email",      "postmaster",  "pop3",
    "server",
};

// Keyboard rows/columns, the alphabet and the digits: neighbouring characters
// in any of these are a predictable "walk" step.
constexpr std::string_view kWalks[] = {
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "`1234567890-=",
    "~!@#$%^&*()_+",
    "1qaz",
    "2wsx",
    "3edc",
    "4rfv",
    "5tgb",
    "6yhn",
    "7ujm",
    "8ik,",
    "9ol.",
    "0p;/",
    "qazwsxedcrfvtgbyhnujmikolp",
    "qwertzuiop",
    "azertyuiop",
};

bool is_letter(char c) { return c >= 'a' && c <= 'z'; }

bool adjacent(char a, char b) {
  if (a == b) return true;
  for (std::string_view w : kWalks) {
    for (std::size_t i = 0; i + 1 < w.size(); ++i) {
      if ((w[i] == a && w[i + 1] == b) || (w[i] == b && w[i + 1] == a)) return true;
    }
  }
  return false;
}

// True when s (lowercase) is a string of length <= n/2 repeated (the last
// repetition may be partial): "abcabcabcabc", "passwordpassword".
bool is_repetition(std::string_view s) {
  for (std::size_t p = 1; p <= s.size() / 2; ++p) {
    bool periodic = true;
    for (std::size_t i = p; i < s.size() && periodic; ++i) periodic = s[i] == s[i - p];
    if (periodic) return true;
  }
  return false;
}

// True when at least 3/4 of the steps between neighbouring characters are
// keyboard/alphabet/digit walk steps (or repeats).
bool is_walk(std::string_view s) {
  if (s.size() < 2) return true;
  std::size_t jumps = 0;
  for (std::size_t i = 1; i < s.size(); ++i) {
    if (!adjacent(s[i - 1], s[i])) ++jumps;
  }
  return jumps * 4 <= s.size() - 1;
}

// The letters left after stripping non-letters from both ends, if the
// stripped part contains no letters (e.g. "2024password!!" -> "password").
std::string_view core_word(std::string_view s) {
  std::size_t b = 0;
  while (b < s.size() && !is_letter(s[b])) ++b;
  std::size_t e = s.size();
  while (e > b && !is_letter(s[e - 1])) --e;
  return s.substr(b, e - b);
}

Error weak(std::string why) { return make_error(Errc::invalid, "weak secret: " + why); }

}  // namespace

Result<void> check_secret_strength(std::string_view secret) {
  if (secret.size() < limits::kMinSecret) {
    return weak("shorter than " + std::to_string(limits::kMinSecret) + " characters");
  }
  if (secret.size() > limits::kMaxSecret) {
    return weak("longer than " + std::to_string(limits::kMaxSecret) + " characters");
  }
  for (char c : secret) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7E) {
      return make_error(Errc::invalid,
                        "invalid secret: only printable ASCII characters (0x20-0x7E) are "
                        "allowed; no control characters, tabs, line breaks or 8-bit octets");
    }
  }
  const std::string s = ascii_lowercase(secret);
  for (std::string_view c : kCommon) {
    if (s == c) return weak("it is a well-known common password");
  }
  std::string_view core = core_word(s);
  for (std::string_view w : kCommonWords) {
    if (core == w) return weak("it is a common word with only digits or symbols added");
  }
  if (is_repetition(s)) return weak("it is a short sequence repeated");
  if (is_walk(s)) return weak("it is a keyboard, alphabet or digit sequence");
  return {};
}

}  // namespace apop::auth
