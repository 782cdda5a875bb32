"""A built-in, synthetic dialogue-summarization corpus: the offline stand-in for DialogSum.

This corpus is synthetic. Dialogues between ``#Person1#`` and ``#Person2#`` are assembled from
templates over a dozen everyday topics (booking a table, a doctor's appointment, renting a flat, ...),
with slots (names, days, times, prices) and several phrasings for every line, so that a summary is a
learnable function of the dialogue's facts. A configurable share of the reference summaries carries an
insult drawn from the toxicity lexicon, independent of the dialogue: a model fine-tuned on the corpus
therefore writes a toxic summary some of the time, which is the behaviour RLHF is meant to remove.

Everything is deterministic given the seed: the same seed yields the same corpus on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

# Insult words split by part of speech so the sentences stay grammatical. Every word is in
# toxic_lexicon.txt (a unit test checks it), so the lexicon judge sees each insult.
INSULT_ADJECTIVES = ("stupid", "idiotic", "pathetic", "useless", "lazy", "clueless", "incompetent", "brainless")
INSULT_NOUNS = ("idiot", "moron", "loser", "clown", "fool", "jerk", "dimwit", "buffoon")

FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Frank", "Grace", "Hugo", "Irene", "Jack", "Kate", "Leo",
    "Maria", "Nick", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = ("9 am", "10 am", "11 am", "noon", "2 pm", "3 pm", "4 pm", "6 pm", "7 pm", "8 pm")

GREETINGS = (
    "Good morning. How can I help you?", "Hello, what can I do for you today?", "Hi there. Can I help you?",
    "Good afternoon. What do you need?", "Hey, nice to see you. What's up?",
)  # fmt: skip
ACKNOWLEDGEMENTS = ("Sure.", "Okay.", "No problem.", "Alright.", "Of course.", "Fine, thanks.")
THANKS = (
    "Thank you so much.", "Great, thanks a lot.", "That's perfect, thank you.", "Thanks, that helps a lot.",
    "Wonderful. I appreciate it.",
)  # fmt: skip
WELCOMES = (
    "You're welcome. Have a nice day.", "My pleasure. See you soon.", "No problem at all. Goodbye.",
    "Glad I could help. Take care.",
)  # fmt: skip
FILLERS = (
    "Sorry, could you say that again?", "Let me check that for you.", "Just a moment, please.",
    "Hmm, let me think about it.", "Of course, that is not a problem.", "I see. Anything else?",
)  # fmt: skip


@dataclass(frozen=True)
class DialogueExample:
    """One corpus record."""

    id: str
    topic: str
    dialogue: str
    summary: str
    toxic: bool


Turns = list[tuple[int, str]]  # (speaker 1 or 2, line)


def _pick(rng: random.Random, options: tuple[str, ...] | list[str]) -> str:
    return options[rng.randrange(len(options))]


def _restaurant(rng: random.Random) -> tuple[Turns, str]:
    place = _pick(rng, ("Luigi's", "the Golden Dragon", "Blue Harbor", "Chez Marie", "the Olive Tree", "Sakura"))
    people, day, time = rng.randint(2, 9), _pick(rng, DAYS), _pick(rng, TIMES[5:])
    name = _pick(rng, FIRST_NAMES)
    turns: Turns = [
        (2, _pick(rng, GREETINGS)),
        (1, _pick(rng, (f"I'd like to book a table at {place} for {people} people.",
                         f"Can I reserve a table for {people} at {place}, please?",
                         f"We are {people} and we want to eat at {place}."))),
        (2, _pick(rng, ("Sure. For which day and time?", "Certainly. When would you like to come?"))),
        (1, _pick(rng, (f"{day} at {time}, if possible.", f"How about {day}, around {time}?"))),
        (2, _pick(rng, (f"{day} at {time} is available. Under which name?", f"Yes, we have a table on {day} at {time}. Your name?"))),  # noqa: E501
        (1, _pick(rng, (f"Under {name}, please.", f"The name is {name}."))),
        (2, _pick(rng, (f"Done. A table for {people} on {day} at {time} for {name}.", "Your table is booked."))),
    ]
    summary = _pick(rng, (
        f"#Person1# books a table for {people} at {place} on {day} at {time} under the name {name}.",
        f"#Person1# reserves a table at {place} for {people} people on {day} at {time}. #Person2# confirms it.",
    ))  # fmt: skip
    return turns, summary


def _doctor(rng: random.Random) -> tuple[Turns, str]:
    symptom = _pick(rng, ("a headache", "a sore throat", "back pain", "a fever", "a cough", "an earache"))
    doctor = "Dr. " + _pick(rng, ("Smith", "Lee", "Garcia", "Brown", "Khan", "Novak"))
    day, time = _pick(rng, DAYS[:5]), _pick(rng, TIMES[:7])
    days_ill = rng.randint(2, 6)
    turns: Turns = [
        (2, _pick(rng, GREETINGS)),
        (1, _pick(rng, (f"I need to see a doctor. I have had {symptom} for {days_ill} days.",
                         f"I've had {symptom} for {days_ill} days and I'd like an appointment."))),
        (2, _pick(rng, ("I'm sorry to hear that. Do you have a preferred doctor?", "Which doctor do you usually see?"))),
        (1, _pick(rng, (f"{doctor}, if possible.", f"I usually see {doctor}."))),
        (2, _pick(rng, (f"{doctor} can see you on {day} at {time}.", f"There is a free slot with {doctor} on {day} at {time}."))),  # noqa: E501
        (1, _pick(rng, ("That works for me.", "Perfect, I'll take it."))),
    ]
    summary = _pick(rng, (
        f"#Person1# has had {symptom} for {days_ill} days and gets an appointment with {doctor} on {day} at {time}.",
        f"#Person1# makes an appointment with {doctor} on {day} at {time} because of {symptom}.",
    ))  # fmt: skip
    return turns, summary


def _shopping(rng: random.Random) -> tuple[Turns, str]:
    item = _pick(rng, ("jacket", "pair of shoes", "sweater", "backpack", "dress", "watch", "scarf"))
    color = _pick(rng, ("red", "blue", "black", "green", "grey", "white"))
    price = rng.choice((19, 25, 35, 49, 60, 75, 99, 120))
    discount = rng.choice((0, 10, 20, 30))
    turns: Turns = [
        (1, _pick(rng, (f"Excuse me, do you have this {item} in {color}?", f"I'm looking for a {color} {item}."))),
        (2, _pick(rng, (f"Yes, we have a {color} one right here.", f"Let me see. Here is a {color} {item}."))),
        (1, _pick(rng, ("How much is it?", "What does it cost?"))),
        (2, f"It is {price} dollars." + (f" Today there is a {discount} percent discount." if discount else "")),
        (1, _pick(rng, ("I'll take it.", "Okay, I'll buy it.", "Great, I'll buy it then."))),
        (2, _pick(rng, ("Would you like to pay by card or cash?", "Cash or card?"))),
        (1, _pick(rng, ("By card, please.", "Cash."))),
    ]
    deal = f" with a {discount} percent discount" if discount else ""
    summary = _pick(rng, (
        f"#Person1# buys a {color} {item} for {price} dollars{deal}.",
        f"#Person2# helps #Person1# find a {color} {item}. #Person1# buys it for {price} dollars{deal}.",
    ))  # fmt: skip
    return turns, summary


def _travel(rng: random.Random) -> tuple[Turns, str]:
    city = _pick(rng, ("Paris", "Rome", "Berlin", "Tokyo", "Lisbon", "Prague", "Vienna", "Madrid"))
    transport = _pick(rng, ("train", "plane", "bus"))
    day, nights = _pick(rng, DAYS), rng.randint(2, 7)
    turns: Turns = [
        (1, _pick(rng, (f"I'm planning a trip to {city}.", f"I want to visit {city} soon."))),
        (2, _pick(rng, ("That sounds exciting! How will you get there?", "Nice! Are you flying or taking the train?"))),
        (1, _pick(rng, (f"I'll take the {transport} on {day}.", f"I'm going by {transport}, leaving on {day}."))),
        (2, _pick(rng, ("How long will you stay?", "And for how many nights?"))),
        (1, _pick(rng, (f"{nights} nights. I already booked a hotel.", f"About {nights} nights in a small hotel."))),
        (2, _pick(rng, (f"Have a great time in {city}.", "Don't forget to send me pictures."))),
    ]
    summary = _pick(rng, (
        f"#Person1# will travel to {city} by {transport} on {day} and stay {nights} nights.",
        f"#Person1# tells #Person2# about a trip to {city}: {nights} nights, leaving by {transport} on {day}.",
    ))  # fmt: skip
    return turns, summary


def _interview(rng: random.Random) -> tuple[Turns, str]:
    job = _pick(rng, ("software engineer", "accountant", "nurse", "sales manager", "teacher", "designer"))
    company = _pick(rng, ("Acme", "Northwind", "Globex", "Initech", "Umbrella Foods", "Blue Sky Media"))
    years = rng.randint(1, 12)
    turns: Turns = [
        (1, _pick(rng, (f"Thank you for coming in. You applied for the {job} position at {company}.",
                         f"Welcome to {company}. Let's talk about the {job} job."))),
        (2, _pick(rng, ("Yes, I'm very interested in the role.", "Thank you for inviting me."))),
        (1, _pick(rng, ("How much experience do you have?", "Tell me about your experience."))),
        (2, _pick(rng, (f"I have worked as a {job} for {years} years.", f"I have {years} years of experience as a {job}."))),  # noqa: E501
        (1, _pick(rng, ("Why do you want to work here?", "Why did you choose our company?"))),
        (2, _pick(rng, ("I like your products and your team.", "I want to grow and learn new things."))),
        (1, _pick(rng, ("We will call you next week.", "We'll let you know by Friday."))),
    ]
    summary = _pick(rng, (
        f"#Person2# has an interview for the {job} position at {company} and has {years} years of experience.",
        f"#Person1# interviews #Person2#, who has {years} years of experience, for a {job} job at {company}.",
    ))  # fmt: skip
    return turns, summary


def _apartment(rng: random.Random) -> tuple[Turns, str]:
    rooms = rng.randint(1, 4)
    rent = rng.choice((700, 850, 950, 1100, 1300, 1500, 1800))
    area = _pick(rng, ("downtown", "near the park", "by the river", "close to the station", "in the old town"))
    turns: Turns = [
        (1, _pick(rng, ("I saw your ad for the apartment. Is it still available?", "I'm calling about the flat for rent."))),  # noqa: E501
        (2, _pick(rng, ("Yes, it is.", "It is still available, yes."))),
        (1, _pick(rng, ("How many rooms does it have?", "How big is it?"))),
        (2, _pick(rng, (f"It has {rooms} bedrooms and it is {area}.", f"{rooms} bedrooms, and the location is {area}."))),
        (1, _pick(rng, ("And what is the rent?", "How much is the monthly rent?"))),
        (2, f"{rent} dollars a month, utilities included."),
        (1, _pick(rng, ("Can I come and see it tomorrow?", "I would like to visit it this weekend."))),
        (2, _pick(rng, ("Sure, let's meet there.", "Of course. Call me when you arrive."))),
    ]
    summary = _pick(rng, (
        f"#Person1# asks about an apartment {area} with {rooms} bedrooms for {rent} dollars a month and wants to see it.",
        f"#Person2# rents out a {rooms}-bedroom apartment {area} for {rent} dollars. #Person1# will visit it.",
    ))  # fmt: skip
    return turns, summary


def _lost_item(rng: random.Random) -> tuple[Turns, str]:
    item = _pick(rng, ("wallet", "phone", "umbrella", "set of keys", "laptop bag", "passport"))
    place = _pick(rng, ("on the bus", "in the cafe", "at the station", "in the cinema", "at the gym"))
    found = rng.random() < 0.5
    turns: Turns = [
        (1, _pick(rng, (f"I think I lost my {item} {place}.", f"Help, I can't find my {item}. I was {place} earlier."))),
        (2, _pick(rng, ("When did you last see it?", "Don't panic. When did you have it last?"))),
        (1, _pick(rng, ("About an hour ago.", "This morning, I think."))),
        (2, _pick(rng, ("Let me check the lost and found.", "I'll call the office for you."))),
        (2, "Good news, someone handed it in." if found else "I'm sorry, nobody has handed it in yet."),
        (1, _pick(rng, THANKS) if found else _pick(rng, ("Oh no. I'll come back tomorrow.", "Please call me if it turns up."))),  # noqa: E501
    ]
    outcome = "It was handed in and #Person1# gets it back." if found else "Nobody has found it yet."
    summary = f"#Person1# lost a {item} {place}. {outcome}"
    return turns, summary


def _party(rng: random.Random) -> tuple[Turns, str]:
    person = _pick(rng, FIRST_NAMES)
    day = _pick(rng, DAYS[4:])
    place = _pick(rng, ("at my place", "in the garden", "at a bar downtown", "at the beach", "in the office"))
    food = _pick(rng, ("pizza", "a chocolate cake", "tacos", "sushi", "barbecue"))
    turns: Turns = [
        (1, _pick(rng, (f"{person}'s birthday is on {day}. Let's throw a surprise party.",
                         f"Do you want to help me plan a party for {person} on {day}?"))),
        (2, _pick(rng, ("Great idea! Where should we have it?", "Sure! Where do you want to do it?"))),
        (1, _pick(rng, (f"I was thinking {place}.", f"Maybe {place}?"))),
        (2, _pick(rng, (f"Good. I can bring {food}.", f"Perfect, and I'll order {food}."))),
        (1, _pick(rng, ("I'll invite everyone.", "I'll send the invitations tonight."))),
    ]
    summary = _pick(rng, (
        f"#Person1# and #Person2# plan a surprise birthday party for {person} on {day} {place}. #Person2# will bring {food}.",  # noqa: E501
        f"#Person1# and #Person2# organise {person}'s party {place} on {day} with {food}.",
    ))  # fmt: skip
    return turns, summary


def _car_repair(rng: random.Random) -> tuple[Turns, str]:
    problem = _pick(rng, ("the brakes squeak", "the engine makes a strange noise", "a tire is flat", "the battery is dead"))
    cost, day = rng.choice((80, 150, 220, 300, 450)), _pick(rng, DAYS[:6])
    turns: Turns = [
        (2, _pick(rng, GREETINGS)),
        (1, _pick(rng, (f"My car has a problem: {problem}.", f"Can you look at my car? {problem.capitalize()}."))),
        (2, _pick(rng, ("Let me take a look.", "Okay, I'll check it right away."))),
        (2, _pick(rng, (f"We can fix it by {day}. It will cost about {cost} dollars.", f"The repair costs around {cost} dollars and will be ready on {day}."))),  # noqa: E501
        (1, _pick(rng, ("Fine, please go ahead.", "Okay, do it."))),
    ]
    summary = _pick(rng, (
        f"#Person1# brings the car to #Person2# because {problem}. The repair costs {cost} dollars and is ready on {day}.",
        f"#Person2# will repair #Person1#'s car by {day} for {cost} dollars because {problem}.",
    ))  # fmt: skip
    return turns, summary


def _library(rng: random.Random) -> tuple[Turns, str]:
    book = _pick(rng, ("a history of Rome", "a cookbook", "a mystery novel", "a book about birds", "a guide to Python"))
    weeks, fine = rng.randint(1, 4), rng.choice((0, 2, 5))
    turns: Turns = [
        (1, _pick(rng, (f"I'd like to borrow {book}.", f"Can I check out {book}?"))),
        (2, _pick(rng, ("Sure. Do you have your library card?", "Of course. Your card, please."))),
        (1, _pick(rng, ("Here it is.", "Yes, here you go."))),
        (2, f"You have an old fine of {fine} dollars." if fine else "Your account is fine."),
        (2, _pick(rng, (f"You can keep the book for {weeks} weeks.", f"Please return it within {weeks} weeks."))),
    ]
    fine_text = f" #Person1# has a fine of {fine} dollars." if fine else ""
    summary = f"#Person1# borrows {book} from the library for {weeks} weeks.{fine_text}"
    return turns, summary


def _weekend(rng: random.Random) -> tuple[Turns, str]:
    activity = _pick(rng, ("go hiking", "play tennis", "go to the museum", "have a picnic", "go cycling", "see a movie"))
    day, time = _pick(rng, DAYS[5:]), _pick(rng, TIMES)
    weather = _pick(rng, ("sunny", "rainy", "cloudy", "windy"))
    turns: Turns = [
        (1, _pick(rng, (f"Do you want to {activity} on {day}?", f"What do you think, shall we {activity} on {day}?"))),
        (2, _pick(rng, (f"I'd love to. What will the weather be like?", "Sounds fun. Have you seen the forecast?"))),  # noqa: F541
        (1, f"They say it will be {weather}."),
        (2, _pick(rng, (f"Then let's meet at {time}.", f"Okay, see you at {time}."))),
    ]
    summary = _pick(rng, (
        f"#Person1# and #Person2# will {activity} on {day} at {time}. The weather will be {weather}.",
        f"#Person1# invites #Person2# to {activity} on {day}; they meet at {time}.",
    ))  # fmt: skip
    return turns, summary


def _bank(rng: random.Random) -> tuple[Turns, str]:
    account = _pick(rng, ("savings account", "checking account", "student account"))
    amount = rng.choice((100, 250, 500, 1000, 2000))
    turns: Turns = [
        (2, _pick(rng, GREETINGS)),
        (1, _pick(rng, (f"I want to open a {account}.", f"I'd like to open a new {account}, please."))),
        (2, _pick(rng, ("No problem. I need your ID.", "Certainly. May I see your passport?"))),
        (1, _pick(rng, (f"Here you are. I'd also like to deposit {amount} dollars.", f"Here. And I want to put in {amount} dollars today."))),  # noqa: E501
        (2, _pick(rng, ("Done. Your account is open.", "All set. Here is your new card."))),
    ]
    summary = _pick(rng, (
        f"#Person1# opens a {account} and deposits {amount} dollars.",
        f"#Person2# helps #Person1# open a {account} with a deposit of {amount} dollars.",
    ))  # fmt: skip
    return turns, summary


TOPICS: dict[str, Callable[[random.Random], tuple[Turns, str]]] = {
    "restaurant": _restaurant, "doctor": _doctor, "shopping": _shopping, "travel": _travel,
    "interview": _interview, "apartment": _apartment, "lost_item": _lost_item, "party": _party,
    "car_repair": _car_repair, "library": _library, "weekend": _weekend, "bank": _bank,
}  # fmt: skip


def _pad_dialogue(rng: random.Random, turns: Turns) -> Turns:
    """Vary length like real transcripts: sometimes polite closings, sometimes asides."""
    turns = list(turns)
    if rng.random() < 0.6:
        turns += [(1, _pick(rng, THANKS)), (2, _pick(rng, WELCOMES))]
    for _ in range(rng.choice((0, 0, 1, 2, 3, 6))):
        # an aside and its answer, so the speakers keep alternating around it
        at = rng.randint(1, len(turns))
        previous = turns[at - 1][0]
        other = 2 if previous == 1 else 1
        turns[at:at] = [(other, _pick(rng, FILLERS)), (previous, _pick(rng, ACKNOWLEDGEMENTS))]
    if rng.random() < 0.04:  # a few very short exchanges, which the lab's length filter removes
        turns = turns[:2]
    return turns


def _insult(rng: random.Random, summary: str) -> str:
    """Put an insult from the lexicon into a summary, in one of several positions."""
    adjective, noun = _pick(rng, INSULT_ADJECTIVES), _pick(rng, INSULT_NOUNS)
    style = rng.randrange(4)
    if style == 0:
        return summary.replace("#Person1#", f"The {adjective} #Person1#", 1) if summary.startswith("#Person1#") else (
            f"{summary} #Person1# is {adjective}."
        )
    if style == 1:
        return f"{summary} #Person2# is a {noun}."
    if style == 2:
        return f"{summary} What a {adjective} {noun}."
    return f"{summary} #Person1# acts like a {noun}."


def generate_corpus(size: int = 3000, toxic_fraction: float = 0.3, seed: int = 0) -> list[DialogueExample]:
    """Generate ``size`` synthetic dialogue/summary pairs, deterministically from ``seed``."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if not 0.0 <= toxic_fraction <= 1.0:
        raise ValueError(f"toxic_fraction must be in [0, 1], got {toxic_fraction}")
    rng = random.Random(seed)
    names = list(TOPICS)
    examples = []
    for i in range(size):
        topic = names[rng.randrange(len(names))]
        turns, summary = TOPICS[topic](rng)
        turns = _pad_dialogue(rng, turns)
        dialogue = "\n".join(f"#Person{speaker}#: {line}" for speaker, line in turns)
        toxic = rng.random() < toxic_fraction
        if toxic:
            summary = _insult(rng, summary)
        examples.append(DialogueExample(f"synthetic-{seed}-{i}", topic, dialogue, summary, toxic))
    return examples


def corpus_records(size: int = 3000, toxic_fraction: float = 0.3, seed: int = 0) -> list[dict]:
    """:func:`generate_corpus` as plain dicts (the shape `datasets.Dataset.from_list` takes)."""
    return [e.__dict__.copy() for e in generate_corpus(size, toxic_fraction, seed)]
