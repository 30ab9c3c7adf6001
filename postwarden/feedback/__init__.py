"""The feedback loop: Postfix's delivery results read back, classified with
postwarden.replies and tied to the outbound record of the message that caused them."""
