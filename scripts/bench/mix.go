package main

// chatMix is the built-in --mix chat: multi-turn conversations (system,
// user, assistant, user) of the kinds a chat deployment serves, from a
// one-line question to a pasted document. The weights make short exchanges
// the common case and long prompts the tail, so a run sees both the
// decode-bound and the prefill-bound regime. The text was written for this
// bench; no conversation depends on another.
var chatMix = []conversation{
	{
		Name:   "qa-geography",
		Weight: 4,
		Messages: []message{
			{"system", "You are a helpful assistant. Answer in one or two sentences."},
			{"user", "What is the difference between latitude and longitude?"},
			{"assistant", "Latitude measures how far north or south of the equator a place is; longitude measures how far east or west of the prime meridian it is."},
			{"user", "So which one changes if I drive straight north?"},
		},
	},
	{
		Name:   "qa-kitchen",
		Weight: 4,
		Messages: []message{
			{"system", "You are a friendly cooking assistant. Keep answers short and practical."},
			{"user", "My bread recipe says 500 g of flour but I only have measuring cups. How many cups is that?"},
			{"assistant", "For all-purpose flour, one cup weighs roughly 125 g when spooned and levelled, so 500 g is about 4 cups. Scooping straight from the bag packs it, so spoon it in if you can."},
			{"user", "And 350 ml of water, is that about one and a half cups?"},
		},
	},
	{
		Name:   "qa-health",
		Weight: 2,
		Messages: []message{
			{"system", "You are a careful assistant. You give general information, not medical advice, and say when someone should see a professional."},
			{"user", "I started running three weeks ago and now the front of my shins hurts after every run. Is that normal?"},
			{"assistant", "Pain along the front of the shins in new runners is common and is often called shin splints: the muscles and bone lining have not yet adapted to the load. It usually improves with less mileage, softer surfaces and a gradual build-up. Sharp pain in one spot, swelling, or pain at rest are reasons to see a doctor, since they can point to a stress fracture."},
			{"user", "How much should I cut back, and for how long before I try my normal distance again?"},
		},
	},
	{
		Name:   "code-go-deadlock",
		Weight: 2,
		Messages: []message{
			{"system", "You are an experienced Go developer who reviews code and explains bugs clearly."},
			{"user", `This program prints nothing and then says "all goroutines are asleep - deadlock!". Why?

package main

import "fmt"

func main() {
	results := make(chan int)
	for i := 0; i < 3; i++ {
		results <- i * i
	}
	close(results)
	for r := range results {
		fmt.Println(r)
	}
}`},
			{"assistant", `The channel is unbuffered, so each send blocks until another goroutine receives. main is the only goroutine, and it is stuck on the first send before it ever reaches the loop that receives. Either start the sends in their own goroutine:

	go func() {
		for i := 0; i < 3; i++ {
			results <- i * i
		}
		close(results)
	}()

or give the channel a buffer large enough for all values, make(chan int, 3).`},
			{"user", `I went with the goroutine. Now I want three workers computing the squares in parallel, each sending its result, and main printing them. Where do I put close so it does not panic with "send on closed channel"?`},
		},
	},
	{
		Name:   "code-python-pandas",
		Weight: 2,
		Messages: []message{
			{"system", "You are a data engineer who answers Python and pandas questions with short, runnable examples."},
			{"user", `I have a DataFrame of orders with columns customer_id, order_date and amount. I want, for each customer, the total amount per month. I tried df.groupby("customer_id").sum() but that sums everything together.`},
			{"assistant", `Group by the customer and the month together. If order_date is a datetime column:

    monthly = (df.groupby(["customer_id", df["order_date"].dt.to_period("M")])["amount"]
                 .sum()
                 .reset_index())

to_period("M") turns each date into its calendar month, so all orders in the same month fall into one group.`},
			{"user", "That works. How do I turn it into a table with one row per customer and one column per month, with 0 where a customer bought nothing that month?"},
		},
	},
	{
		Name:   "code-sql",
		Weight: 1,
		Messages: []message{
			{"system", "You are a database expert. Prefer standard SQL and explain the query briefly."},
			{"user", "Tables: customers(id, name, country) and invoices(id, customer_id, issued_on, total). I need the five customers with the highest total invoiced in 2025, with their country."},
			{"assistant", `SELECT c.name, c.country, SUM(i.total) AS invoiced
FROM customers c
JOIN invoices i ON i.customer_id = c.id
WHERE i.issued_on >= DATE '2025-01-01' AND i.issued_on < DATE '2026-01-01'
GROUP BY c.id, c.name, c.country
ORDER BY invoiced DESC
FETCH FIRST 5 ROWS ONLY;

The half-open date range keeps the filter usable by an index on issued_on.`},
			{"user", "Now I need the top five per country instead of overall. Our database is PostgreSQL 16."},
		},
	},
	{
		Name:   "summarise-incident",
		Weight: 1,
		Messages: []message{
			{"system", "You summarise technical documents for busy engineering managers. Be accurate, neutral and brief."},
			{"user", `Please summarise this incident report in five sentences.

Incident report: checkout outage, Tuesday

Timeline. At 09:12 the payments team deployed version 4.18 of the checkout service. The release contained a change to the retry policy for calls to the card processor: failed calls were now retried up to five times with no delay between attempts, instead of three times with exponential backoff. The change had passed review because the pull request described it as a refactoring of the configuration format, and the new default values were not called out.

At 10:40 the card processor began returning timeouts for roughly four percent of requests because of a network problem on their side. Each timeout now produced five immediate retries, which multiplied the load on the processor's gateway. Within six minutes the gateway began rejecting most requests with rate-limit errors, and the checkout success rate fell from 98 percent to 31 percent. On-call was paged at 10:47 by the success-rate alert.

The on-call engineer first suspected the processor, whose status page reported degraded performance, and opened a ticket with them at 10:55. At 11:20 a second engineer noticed in the dashboards that outgoing request volume to the processor had risen by a factor of four while customer traffic was flat. The team rolled back to version 4.17 at 11:31. Request volume returned to normal within two minutes, and the checkout success rate recovered to 97 percent by 11:38, although the processor's network problem continued until 12:05.

Impact. About 14,000 checkout attempts failed over 51 minutes. Support received 620 contacts. No payments were taken twice, because the processor deduplicates requests by idempotency key.

Contributing factors. The retry defaults were changed without being flagged in the pull request. There was no alert on outgoing request volume to third parties. The runbook for checkout errors pointed first to the processor's status page, which made an external cause look more likely.

Actions. Restore backoff and a retry budget in the client library. Add an alert when outgoing calls per checkout exceed 1.5. Require configuration default changes to be listed in the pull request template. Update the runbook to compare outgoing and incoming traffic before contacting a vendor.`},
			{"assistant", "A checkout release at 09:12 changed the card-processor client to retry failed calls five times without delay. When the processor started timing out on about 4% of requests at 10:40, those immediate retries quadrupled outgoing traffic and triggered the processor's rate limits, dropping checkout success from 98% to 31%. On-call initially attributed the problem to the processor's own degradation, and the retry storm was only identified at 11:20 from the traffic dashboards. Rolling back at 11:31 restored success to 97% by 11:38; about 14,000 checkouts failed over 51 minutes, with no double charges. Follow-ups cover retry backoff and budgets, an alert on outgoing calls per checkout, flagging default changes in reviews, and a runbook update."},
			{"user", "Now turn the actions into a table with columns: action, owner team, priority (high/medium/low), and a one-line reason. Guess the owner team from the report."},
		},
	},
	{
		Name:   "summarise-meeting",
		Weight: 1,
		Messages: []message{
			{"system", "You are an assistant that turns meeting notes into clear written summaries."},
			{"user", `Here are my raw notes from the library renovation committee meeting. Summarise the decisions.

- Present: Amira (chair), Jonas, Beatrice, Ken, Sofia; apologies from Pedro
- Budget update from Ken: the council confirmed 240k for the renovation, 30k less than we asked. The roof repair can't be cut, quote is 95k. Jonas suggests postponing the new shelving in the children's area, saves about 22k. Beatrice against, the old shelves are a safety problem, two brackets already came loose. Long discussion.
- Agreed to keep the children's shelving but pick the cheaper supplier (saves 9k) and drop the café corner for now (saves 18k), revisit next year.
- Sofia: the architect needs a decision on the accessible entrance by the end of the month. Two options: ramp at the front (cheaper, 28k, blocks part of the pavement, needs a permit) or lift at the side entrance (41k, no permit). Ken worried about the lift's maintenance costs, roughly 2k a year. Vote: 4 for the ramp, 1 for the lift. Sofia to apply for the permit this week.
- Opening hours during works: library stays open, but the reading room closes for six weeks from March. Amira to draft a notice for the website and the newsletter.
- Volunteers: 12 signed up to help move books. Jonas to make a rota.
- Next meeting in three weeks, same place.`},
			{"assistant", "The committee confirmed a budget of 240k, 30k short of the request. To close the gap it kept the children's shelving for safety reasons but chose a cheaper supplier (saving 9k) and postponed the café corner (saving 18k) to next year; the 95k roof repair stays. For the accessible entrance it voted 4 to 1 for the front ramp (28k, permit needed) over the side lift. The library will stay open during the works, with the reading room closed for six weeks from March. Twelve volunteers will help move books, and the committee meets again in three weeks."},
			{"user", "Good. Now write the list of action items with the person responsible and the deadline where one was mentioned, and point out any decision that still leaves the budget short."},
		},
	},
	{
		Name:   "travel-planning",
		Weight: 2,
		Messages: []message{
			{"system", "You are a travel planning assistant. Suggest realistic plans and mention trade-offs."},
			{"user", "I have four days in early October and want to see mountains and lakes without a car, starting and ending in Zurich. Ideas?"},
			{"assistant", "A good car-free loop is Zurich to Lucerne (one hour by train) for a day on the lake and a cog-railway trip up a nearby peak, then on to Interlaken by the scenic line over the Brünig pass, with two nights there for the Lauterbrunnen valley and a hike between the villages above it, and back to Zurich via Bern. Early October usually still has lifts running, but check closing dates for the highest ones, and book seat reservations on the panoramic trains."},
			{"user", "I'd rather avoid the crowds in Interlaken. Could I stay somewhere quieter, and which day would you keep free in case the weather is bad?"},
		},
	},
}
