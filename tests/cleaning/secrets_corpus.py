"""Planted secrets (fake, in the shapes real chats carry them) and a control corpus that must survive."""

AWS_ACCESS_KEY = "AKIAZ7QF3XK2LMN4PQRS"
AWS_SECRET_KEY = "q8Zr3Tn0bVx7Kp2Lm9Wd4Hs6Jf1Gc5Ya8Ue0Ri3O"
GITHUB_TOKEN = "ghp_7fK2pQ9xLm3Zr8Tn1Vb6Wc4Yd0Hs5Jg2Ua7E"
GITHUB_FINE = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"
SLACK_TOKEN = "xoxb-1234567890-0987654321098-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_WEBHOOK = "https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMN/aBcDeFgHiJkLmNoPqRsTuVwX"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MjQyIiwibmFtZSI6IkFkYSBMb3ZlbGFjZSIsImlhdCI6MTcwMDAwMDAwMH0"
    ".Zq3vN8mK1xP0rT7wY2bL5cH9dF4gJ6sA0eU3iO8kM1n"
)
OPENAI_KEY = "sk-proj-Ab12Cd34Ef56Gh78Ij90T3BlbkFJKl12Mn34Op56Qr78St90"
OPENAI_PLAIN = "sk-4fT9qLm2Zx8Rb7Nc1Vd6Wh3Ks0Jy5Gp2Ue8Ai4Ot9Lr"
PASSWORD_IN_URL = "Tr0ub4dor-3x9Q"
DB_PASSWORD = "s3cr3t-Hunter2-pw"
EMAIL = "ada.lovelace+ml@example-analytics.co.uk"
EMAIL2 = "j.doe@corp.example.com"
PHONE_INTL = "+44 20 7946 0958"
PHONE_US = "(415) 555-0132"
PHONE_US2 = "415-555-0199"
PEM_LINES = [
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0",
    "wOwIy4kzmXLYN5c3VpE9VH3Mx0KQl9jPnxwY4D0dMOE1ZfKQ1zkpY8GvQ9mD1FqvDbe0Hc8x1a4LdVq",
    "cP2yEW3J7aMZkRt6hTwo9XbS5Nq0VvB8gLnKdE4u3pIe7OrYsF1mCjHxAz2WQ6tGiD5kUfR9lBh0",
]
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_LINES) + "\n-----END RSA PRIVATE KEY-----"

PROSE = f"""Here is my setup, can you see why boto fails? I exported AWS_ACCESS_KEY_ID={AWS_ACCESS_KEY} and
my teammate (reach her at {EMAIL} or {PHONE_INTL}) said the token {GITHUB_TOKEN} should work for the repo.
Call me on {PHONE_US} if it is easier, or {PHONE_US2}; my work mail is {EMAIL2}."""

CODE = f"""```python
import boto3, openai, requests

session = boto3.Session(aws_access_key_id="{AWS_ACCESS_KEY}", aws_secret_access_key="{AWS_SECRET_KEY}")
openai.api_key = "{OPENAI_KEY}"
client = OpenAI(api_key="{OPENAI_PLAIN}")
requests.post("{SLACK_WEBHOOK}", headers={{"Authorization": "Bearer {JWT}"}})
DATABASE_URL = "postgresql://app_user:{PASSWORD_IN_URL}@db.internal:5432/app"
db_password = "{DB_PASSWORD}"
```"""

THINKING = f"The user pasted a Slack bot token {SLACK_TOKEN} and a fine-grained PAT {GITHUB_FINE}; warn them."

SYSTEM = f"You are the helpdesk bot. Escalations go to {EMAIL2}. Use the deploy key below.\n{PEM}"

TOOL_ARGUMENTS = {
    "url": f"https://deploy:{PASSWORD_IN_URL}@git.example.com/team/app.git",
    "headers": {"Authorization": f"token {GITHUB_TOKEN}"},
    "password": DB_PASSWORD,
    "notify": [EMAIL, PHONE_INTL],
}

TOOL_RESULT = f'{{"status": "ok", "key": "{PEM_LINES[0]}", "jwt": "{JWT}", "slack": "{SLACK_TOKEN}"}}'

PLANTED = [
    AWS_ACCESS_KEY,
    AWS_SECRET_KEY,
    GITHUB_TOKEN,
    GITHUB_FINE,
    SLACK_TOKEN,
    JWT,
    OPENAI_KEY,
    OPENAI_PLAIN,
    PASSWORD_IN_URL,
    DB_PASSWORD,
    EMAIL,
    EMAIL2,
    PHONE_INTL,
    PHONE_US,
    PHONE_US2,
    *PEM_LINES,
    "aBcDeFgHiJkLmNoPqRsTuVwX",  # the Slack webhook's secret part
]

CONTROL = [
    "The answer is 42, and 3.14159 rounds to 3.14; 1,000,000 rows took 12:30:45 on 2024-01-15.",
    "Version 2.11.0 of torch, port 8080, IP 192.168.1.10, and the id 1234567890 are fine to keep.",
    'def area(r: float) -> float:\n    return 3.14159 * r ** 2\n\nprint(area(2.0))  # "12.56636"',
    'config = {"lr": 2e-4, "epochs": 3, "name": "my-run", "path": "/home/ada/data/train.jsonl"}',
    "git checkout 9fceb02d0ae598e95dc970b74767f19372d61af8 && pip install 'numpy>=2.0'",
    'password = input("Password: ")\ntoken = os.environ["GITHUB_TOKEN"]\nkey = "${API_KEY}"',
    "Use the @dataclass decorator, or email me via the contact form; call extension 4412.",
    "x = [12, 345, 6789]  # sums to 7146\nmatrix @ vector for numpy arrays, see https://numpy.org/doc/",
    "Set api_key to <your key here> and run `curl https://example.com/api/v1/items?page=2`.",
]
